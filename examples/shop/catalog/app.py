"""Catalog: list, search and read products; a product shows its seller from the users service.

``create_app(engine)`` builds the service on any engine (tests run several
apps in one process); ``app`` is the one ``qanat up`` serves, on
``QANAT_DATABASE_URL``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel
from shop_common.db import ensure_schema, make_engine, seed
from sqlalchemy import Column, Integer, MetaData, String, Table, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

import qanat
from catalog.seed import PRODUCTS

metadata = MetaData()
products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", String(1000), nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("seller_id", Integer, nullable=False),
)


async def prepare(engine: AsyncEngine) -> None:
    """Schema and seed products; every replica runs it at start (see shop_common.db)."""
    await ensure_schema(engine, metadata)
    rows = [
        {"id": p, "name": n, "description": d, "price_cents": c, "seller_id": s}
        for p, n, d, c, s in PRODUCTS
    ]
    async with engine.begin() as conn:
        await seed(conn, products, rows)


def engine_of(request: Request) -> AsyncEngine:
    """The engine of the app serving ``request`` (set by ``create_app``)."""
    engine: AsyncEngine = request.app.state.engine
    return engine


def users_of(request: Request) -> qanat.ServiceClient:
    """The client for the users service of the app serving ``request``."""
    client: qanat.ServiceClient = request.app.state.users
    return client


Engine = Annotated[AsyncEngine, Depends(engine_of)]
Users = Annotated[qanat.ServiceClient, Depends(users_of)]


class Product(BaseModel):
    id: int
    name: str
    description: str
    price_cents: int
    seller_id: int
    seller: dict[str, Any] | None = None


class ProductPage(BaseModel):
    items: list[Product]
    total: int
    limit: int
    offset: int


async def list_products(
    engine: Engine,
    q: Annotated[
        str | None, Query(max_length=100, description="search in name and description")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ProductPage:
    where = []
    if q:
        pattern = f"%{q.lower()}%"
        where.append(
            or_(
                func.lower(products.c.name).like(pattern),
                func.lower(products.c.description).like(pattern),
            )
        )
    async with engine.connect() as conn:
        total = (
            await conn.execute(select(func.count()).select_from(products).where(*where))
        ).scalar_one()
        rows = (
            await conn.execute(
                select(products).where(*where).order_by(products.c.id).limit(limit).offset(offset)
            )
        ).all()
    items = [Product(**row._mapping) for row in rows]
    return ProductPage(items=items, total=total, limit=limit, offset=offset)


async def get_product(product_id: int, engine: Engine, users: Users) -> Product:
    async with engine.connect() as conn:
        row = (await conn.execute(select(products).where(products.c.id == product_id))).first()
    if row is None:
        raise HTTPException(404, f"no product with id {product_id}")
    product = Product(**row._mapping)
    try:
        response = await users.get(f"/users/{product.seller_id}")
        if response.status == 200:
            seller = response.json()
            product.seller = {"id": seller["id"], "name": seller["name"]}
    except qanat.Unavailable:
        product.seller = None  # degrade: the product is still worth showing
    return product


def create_app(
    engine: AsyncEngine,
    *,
    tracer_provider: TracerProvider | None = None,
    json_logs: bool = True,
) -> FastAPI:
    """The catalog service on ``engine``, wrapped in ``qanat.Service``; the engine is
    prepared at startup and disposed of at shutdown. The keywords go to the Service."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await prepare(engine)
        yield
        await engine.dispose()

    app = FastAPI(title="catalog", lifespan=lifespan)
    app.state.engine = engine
    app.add_api_route("/products", list_products, methods=["GET"], response_model=ProductPage)
    app.add_api_route(
        "/products/{product_id}", get_product, methods=["GET"], response_model=Product
    )
    service = qanat.Service(
        app,
        "catalog",
        depends_on=["users"],
        tracer_provider=tracer_provider,
        json_logs=json_logs,
    )
    app.state.users = service.client("users")
    return app


engine = make_engine("catalog")
app = create_app(engine)
