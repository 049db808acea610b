"""Users: create and read users, each with a unique email.

Idempotent creation (IETF httpapi Idempotency-Key draft): a POST carrying
``Idempotency-Key`` replays the first response for the same key and payload
(so the client may retry it safely) and answers 422 when the same key comes
with a different payload. Two identical requests that race are settled by the
database, not by a read: the first to insert the key creates the user, the
other waits for it and replays its response.

``create_app(engine)`` builds the service on any engine (tests run several
apps in one process); ``app`` is the one ``qanat up`` serves, on
``QANAT_DATABASE_URL``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, Field
from shop_common.db import ensure_schema, insert_or_skip, make_engine, seed
from sqlalchemy import Column, Integer, MetaData, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import qanat

metadata = MetaData()
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("email", String(254), nullable=False, unique=True),
)
idempotency = Table(
    "idempotency",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", String, nullable=False),
)
SELLERS = [
    (1, "Acme Supplies", "sales@acme.example"),
    (2, "Bright Books", "hello@bright.example"),
    (3, "Cedar Tools", "shop@cedar.example"),
]


async def prepare(engine: AsyncEngine) -> None:
    """Schema and seed sellers; every replica runs it at start (see shop_common.db)."""
    await ensure_schema(engine, metadata)
    async with engine.begin() as conn:
        await seed(conn, users, [{"id": i, "name": n, "email": e} for i, n, e in SELLERS])


def engine_of(request: Request) -> AsyncEngine:
    """The engine of the app serving ``request`` (set by ``create_app``)."""
    engine: AsyncEngine = request.app.state.engine
    return engine


Engine = Annotated[AsyncEngine, Depends(engine_of)]


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)


class UserOut(BaseModel):
    id: int
    name: str
    email: str


async def replay(conn: AsyncConnection, key: str, fingerprint: str) -> JSONResponse:
    """The stored response for ``key``; 422 when it was for another payload."""
    row = (await conn.execute(select(idempotency).where(idempotency.c.key == key))).first()
    if row is None:  # only under an isolation level that hides the winner's commit
        raise HTTPException(409, "a request with this Idempotency-Key is in progress; retry")
    if row.fingerprint != fingerprint:
        raise HTTPException(422, "Idempotency-Key reused with a different payload")
    return JSONResponse(json.loads(row.body), status_code=row.status)


async def create_user(
    body: UserIn,
    engine: Engine,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    async with engine.begin() as conn:
        if idempotency_key:
            # Claim the key first; the response is filled in below, in the same transaction,
            # so no other request ever reads a claimed key without its response.
            claim = {"key": idempotency_key, "fingerprint": fingerprint, "status": 0, "body": ""}
            if await insert_or_skip(conn, idempotency, claim) is None:
                return await replay(conn, idempotency_key, fingerprint)
        values = {"name": body.name, "email": body.email}
        user_id = await insert_or_skip(conn, users, values, conflict_on=["email"])
        if user_id is None:  # raising rolls back the claim too: a retry is judged afresh
            raise HTTPException(409, f"a user with email {body.email} already exists")
        out = UserOut(id=user_id, name=body.name, email=body.email).model_dump()
        if idempotency_key:
            await conn.execute(
                update(idempotency)
                .where(idempotency.c.key == idempotency_key)
                .values(status=201, body=json.dumps(out))
            )
    return JSONResponse(out, status_code=201)


async def get_user(user_id: int, engine: Engine) -> UserOut:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise HTTPException(404, f"no user with id {user_id}")
    return UserOut(id=row.id, name=row.name, email=row.email)


def create_app(
    engine: AsyncEngine,
    *,
    tracer_provider: TracerProvider | None = None,
    json_logs: bool = True,
) -> FastAPI:
    """The users service on ``engine``, wrapped in ``qanat.Service``; the engine is
    prepared at startup and disposed of at shutdown. The keywords go to the Service."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await prepare(engine)
        yield
        await engine.dispose()

    app = FastAPI(title="users", lifespan=lifespan)
    app.state.engine = engine
    app.add_api_route(
        "/users", create_user, methods=["POST"], status_code=201, response_model=UserOut
    )
    app.add_api_route("/users/{user_id}", get_user, methods=["GET"], response_model=UserOut)
    qanat.Service(app, "users", tracer_provider=tracer_provider, json_logs=json_logs)
    return app


engine = make_engine("users")
app = create_app(engine)
