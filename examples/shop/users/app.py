"""Users: create and read users, each with a unique email.

Idempotent creation: a POST carrying ``Idempotency-Key`` replays the first
response for the same key and payload (so the client may retry it safely) and
answers 422 when the same key comes with a different payload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from shop_common.db import ensure_schema, make_engine, seed
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

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

engine = make_engine("users")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await ensure_schema(engine, metadata)
    async with engine.begin() as conn:
        await seed(conn, users, [{"id": i, "name": n, "email": e} for i, n, e in SELLERS])
    yield
    await engine.dispose()


app = FastAPI(title="users", lifespan=lifespan)
service = qanat.Service(app, "users")


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)


class UserOut(BaseModel):
    id: int
    name: str
    email: str


@app.post("/users", status_code=201, response_model=UserOut)
async def create_user(
    body: UserIn,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    async with engine.begin() as conn:
        if idempotency_key:
            row = (
                await conn.execute(select(idempotency).where(idempotency.c.key == idempotency_key))
            ).first()
            if row is not None:
                if row.fingerprint != fingerprint:
                    raise HTTPException(422, "Idempotency-Key reused with a different payload")
                return JSONResponse(json.loads(row.body), status_code=row.status)
        try:
            result = await conn.execute(insert(users).values(name=body.name, email=body.email))
        except IntegrityError:
            raise HTTPException(409, f"a user with email {body.email} already exists") from None
        key = result.inserted_primary_key
        assert key is not None
        out = UserOut(id=key[0], name=body.name, email=body.email).model_dump()
        if idempotency_key:
            await conn.execute(
                insert(idempotency).values(
                    key=idempotency_key, fingerprint=fingerprint, status=201, body=json.dumps(out)
                )
            )
    return JSONResponse(out, status_code=201)


@app.get("/users/{user_id}", response_model=UserOut)
async def get_user(user_id: int) -> UserOut:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise HTTPException(404, f"no user with id {user_id}")
    return UserOut(id=row.id, name=row.name, email=row.email)
