"""The shop's users and catalog services on a real PostgreSQL, each app run in-process.

Every test gets databases of its own (``qanat_shop_<service>_<random>``) that
do not exist beforehand: the app creates its database at startup, as it does
on a fresh cluster, and the fixture drops them afterwards. The server is
``QANAT_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``);
when it cannot be reached the tests are skipped, which ``tests/conftest.py``
reports as a failure under CI (``CI`` is set).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from qanat.errors import ConfigError

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
if str(SHOP) not in sys.path:  # the shop's packages are top-level (users, catalog, shop_common)
    sys.path.insert(0, str(SHOP))

db: Any = importlib.import_module("shop_common.db")
users_app: Any = importlib.import_module("users.app")
catalog_app: Any = importlib.import_module("catalog.app")

ADMIN_URL = os.environ.get("QANAT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
STARTUP_DEADLINE = 60.0  # seconds for apps to start on a busy shared 2-core machine
SEED_USER_IDS = [i for i, _, _ in users_app.SELLERS]
PRODUCTS: list[tuple[int, str, str, int, int]] = catalog_app.PRODUCTS


SERVER, ADMIN_DATABASE = ADMIN_URL.rsplit("/", 1)


def database_url(name: str, driver: str = "+asyncpg") -> str:
    """The URL of database ``name`` on the test server (SQLAlchemy's; asyncpg's with "")."""
    return SERVER.replace("postgresql://", f"postgresql{driver}://", 1) + f"/{name}"


async def fetch(name: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run ``query`` on database ``name`` over a connection of the test's own."""
    conn = await asyncpg.connect(database_url(name, driver=""))
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def database_exists(name: str) -> bool:
    return bool(await fetch(ADMIN_DATABASE, "SELECT 1 FROM pg_database WHERE datname = $1", name))


@pytest.fixture
async def fresh_database() -> AsyncIterator[Callable[[str], str]]:
    """``fresh_database(service)`` names a database that does not exist yet; all are dropped."""
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        # A skip; tests/conftest.py turns it into a failure when CI is set.
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL} (QANAT_TEST_POSTGRES): {exc!r}")
    names: list[str] = []

    def make(service: str) -> str:
        names.append(f"qanat_shop_{service}_{uuid.uuid4().hex[:10]}")
        return names[-1]

    try:
        yield make
    finally:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def build(module: ModuleType, service: str, url: str, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The service's app on an engine made the way ``qanat up`` makes it (from the env var)."""
    monkeypatch.setenv("QANAT_DATABASE_URL", url)
    engine = db.make_engine(service)
    app: FastAPI = module.create_app(engine, tracer_provider=TracerProvider(), json_logs=False)
    return app


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and yield a client that speaks to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


@pytest.fixture
async def users(
    fresh_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A running users app on a fresh database, and that database's name."""
    name = fresh_database("users")
    async with serving(build(users_app, "users", database_url(name), monkeypatch)) as client:
        yield client, name


def new_user() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"name": f"User {tag}", "email": f"{tag}@example.com"}


async def test_users_app_creates_its_database_and_the_first_post_follows_the_seeds(
    fresh_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Startup creates the missing database and seeds the sellers; the first POST gets the id
    after the largest seeded id (the sequence was moved past them) and reads back."""
    name = fresh_database("users")
    assert not await database_exists(name)
    async with serving(build(users_app, "users", database_url(name), monkeypatch)) as client:
        assert await database_exists(name)
        seller = (await client.get(f"/users/{SEED_USER_IDS[0]}")).json()
        assert seller["name"] == users_app.SELLERS[0][1]
        body = new_user()
        created = await client.post("/users", json=body)
        assert created.status_code == 201, created.text
        assert created.json() == {"id": max(SEED_USER_IDS) + 1, **body}
        got = await client.get(f"/users/{created.json()['id']}")
        assert got.status_code == 200 and got.json() == created.json()
        assert (await client.get("/users/999999")).status_code == 404


async def test_duplicate_email_is_409_and_stores_one_row(
    users: tuple[httpx.AsyncClient, str],
) -> None:
    """A second POST with an existing email answers 409 and adds no row."""
    client, name = users
    body = new_user()
    assert (await client.post("/users", json=body)).status_code == 201
    again = await client.post("/users", json={**body, "name": "Someone Else"})
    assert again.status_code == 409
    assert body["email"] in again.json()["detail"]
    rows = await fetch(name, "SELECT id FROM users WHERE email = $1", body["email"])
    assert len(rows) == 1


async def test_idempotent_post_replays_and_refuses_a_different_payload(
    users: tuple[httpx.AsyncClient, str],
) -> None:
    """The same Idempotency-Key and payload replay the first response (one user); the same key
    with another payload is 422 and creates nothing."""
    client, name = users
    body, key = new_user(), {"Idempotency-Key": uuid.uuid4().hex}
    first = await client.post("/users", json=body, headers=key)
    second = await client.post("/users", json=body, headers=key)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    other = new_user()
    refused = await client.post("/users", json=other, headers=key)
    assert refused.status_code == 422
    emails = [r["email"] for r in await fetch(name, "SELECT email FROM users")]
    assert emails.count(body["email"]) == 1 and other["email"] not in emails


async def test_concurrent_posts_with_one_idempotency_key_create_one_user(
    users: tuple[httpx.AsyncClient, str],
) -> None:
    """Eight POSTs racing with the same key and payload all answer the same 201, and exactly
    one user exists (the losers waited for the winner and replayed its response)."""
    client, name = users
    body, key = new_user(), {"Idempotency-Key": uuid.uuid4().hex}
    replies = await asyncio.gather(
        *(client.post("/users", json=body, headers=key) for _ in range(8))
    )
    assert {r.status_code for r in replies} == {201}, [r.text for r in replies]
    assert len({json.dumps(r.json(), sort_keys=True) for r in replies}) == 1
    rows = await fetch(name, "SELECT id FROM users WHERE email = $1", body["email"])
    assert [r["id"] for r in rows] == [replies[0].json()["id"]]


async def test_concurrent_posts_with_one_email_create_one_user(
    users: tuple[httpx.AsyncClient, str],
) -> None:
    """Eight POSTs racing with the same email and no key: one 201, the others 409."""
    client, name = users
    body = new_user()
    replies = await asyncio.gather(*(client.post("/users", json=body) for _ in range(8)))
    assert sorted(r.status_code for r in replies) == [201] + [409] * 7
    rows = await fetch(name, "SELECT id FROM users WHERE email = $1", body["email"])
    assert len(rows) == 1


def product_json(row: tuple[int, str, str, int, int]) -> dict[str, Any]:
    pid, name, description, price, seller = row
    return {
        "id": pid,
        "name": name,
        "description": description,
        "price_cents": price,
        "seller_id": seller,
        "seller": None,  # no registry in-process: the catalog degrades to no seller
    }


async def test_products_list_search_and_get(
    fresh_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog lists its seed rows in id order with paging, searches name and description
    case-insensitively, reads one product and answers 404 for an unknown id."""
    name = fresh_database("catalog")
    app = build(catalog_app, "catalog", database_url(name), monkeypatch)
    async with serving(app) as client:
        page = (await client.get("/products", params={"limit": 5, "offset": 2})).json()
        expected = [product_json(p) for p in sorted(PRODUCTS)[2:7]]
        assert page == {"items": expected, "total": len(PRODUCTS), "limit": 5, "offset": 2}
        found = (await client.get("/products", params={"q": "BoOk"})).json()
        matches = [p for p in PRODUCTS if "book" in (p[1] + " " + p[2]).lower()]
        assert matches and found["total"] == len(matches)
        assert [p["id"] for p in found["items"]] == sorted(p[0] for p in matches)
        one = await client.get(f"/products/{PRODUCTS[4][0]}")
        assert one.status_code == 200 and one.json() == product_json(PRODUCTS[4])
        assert (await client.get("/products/999999")).status_code == 404


async def run_instance(app: FastAPI, up: asyncio.Event, stop: asyncio.Event) -> None:
    """Start ``app`` (its whole lifespan in this task), set ``up``, serve until ``stop``.

    ``up`` is set when startup fails too; the task then holds the error."""
    try:
        async with app.router.lifespan_context(app):
            up.set()
            await stop.wait()
    finally:
        up.set()


async def test_two_instances_start_together_on_an_empty_server(
    fresh_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two users apps (two engines) starting at the same moment with no database both come up;
    the seeds exist once and each instance's POST gets its own id past them."""
    name = fresh_database("users")
    apps = [build(users_app, "users", database_url(name), monkeypatch) for _ in range(2)]
    ups, stop = [asyncio.Event() for _ in apps], asyncio.Event()
    tasks = [asyncio.create_task(run_instance(a, u, stop)) for a, u in zip(apps, ups, strict=True)]
    try:
        async with asyncio.timeout(STARTUP_DEADLINE):
            await asyncio.gather(*(up.wait() for up in ups))
        for task in tasks:
            if task.done():
                task.result()  # an instance that failed to start raises its error here
        ids = []
        for app in apps:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                reply = await client.post("/users", json=new_user())
                assert reply.status_code == 201, reply.text
                ids.append(reply.json()["id"])
        seeded = await fetch(
            name, "SELECT id FROM users WHERE id = ANY($1) ORDER BY id", SEED_USER_IDS
        )
        assert [r["id"] for r in seeded] == sorted(SEED_USER_IDS)
        assert len(set(ids)) == 2 and min(ids) > max(SEED_USER_IDS)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_later_instance_does_not_move_the_id_sequence_back(
    fresh_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance started after users were created (seeding again) leaves the id sequence where
    it was: its first POST gets the next id, even when the newest row is gone (the sequence is
    only moved forward, never down to the table's largest id)."""
    name = fresh_database("users")
    url = database_url(name)
    async with serving(build(users_app, "users", url, monkeypatch)) as first:
        earlier = [(await first.post("/users", json=new_user())).json()["id"] for _ in range(3)]
    # Stands for a row another replica has taken an id for but not committed yet.
    await fetch(name, "DELETE FROM users WHERE id = $1", max(earlier))
    async with serving(build(users_app, "users", url, monkeypatch)) as second:
        reply = await second.post("/users", json=new_user())
    assert reply.status_code == 201, reply.text
    assert reply.json()["id"] == max(earlier) + 1


def test_database_urls_get_async_drivers_and_others_are_refused() -> None:
    """``postgres://`` and ``postgresql://`` get asyncpg, ``sqlite://`` aiosqlite; a MySQL URL is a
    ConfigError naming the variable it came from and the supported dialects."""
    pg = db.database_url("users", "postgres://u@h:5432/shop_users")
    assert pg.drivername == "postgresql+asyncpg" and pg.database == "shop_users"
    assert db.database_url("users", "postgresql://u@h/x").drivername == "postgresql+asyncpg"
    assert db.database_url("users", "sqlite:///a/b.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ConfigError, match="postgresql\\+asyncpg") as info:
        db.database_url("users", "mysql+aiomysql://u@h/x")
    assert info.value.source == "database URL"
