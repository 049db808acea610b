"""A service's own database: SQLAlchemy async, SQLite by default, PostgreSQL by URL.

Replicas of a service start together and share one database, so every step
of a start is safe to run by all of them at once:

- the database itself (PostgreSQL): created if missing (``postgres.ensure_database``);
- the schema: ``CREATE TABLE IF NOT EXISTS`` in one transaction, not
  SQLAlchemy's check-then-create, which races; on PostgreSQL under an advisory
  lock, and on any dialect retried when it loses a race anyway;
- seed rows: inserts that skip rows another replica wrote first; on PostgreSQL
  the id sequence is then moved past the seeded ids.

Requests use the same tool: ``insert_or_skip`` (INSERT ... ON CONFLICT DO
NOTHING RETURNING) tells a caller whether it or a concurrent request won.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, MetaData, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateIndex, CreateTable

from qanat.errors import ConfigError
from shop_common import postgres

SCHEMA_ATTEMPTS = 5
URL_SOURCE = "QANAT_DATABASE_URL"
# The async driver each supported dialect uses when a URL names none.
DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
POOL_SIZE = 5  # per process; a replica of the shop rarely holds more than a few at once
MAX_OVERFLOW = 10


def database_url(default_name: str, url: str | None = None) -> URL:
    """``url``, else ``QANAT_DATABASE_URL`` (set by ``qanat up``), else ``.qanat/<name>.db``.

    ``sqlite://`` and ``postgresql://`` (or ``postgres://``) get their async
    drivers (aiosqlite, asyncpg). Any other database is a ``ConfigError``.
    """
    raw = url or os.environ.get(URL_SOURCE) or f"sqlite+aiosqlite:///.qanat/{default_name}.db"
    source = "database URL" if url else URL_SOURCE
    try:
        parsed = make_url(
            "postgresql://" + raw.removeprefix("postgres://")
            if raw.startswith("postgres://")
            else raw
        )
    except ArgumentError:
        raise ConfigError(
            f"{raw!r} is not a database URL; use sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user@host:5432/database",
            source=source,
        ) from None
    dialect, _, driver = parsed.drivername.partition("+")
    if dialect not in DRIVERS or driver not in ("", DRIVERS[dialect]):
        supported = ", ".join(f"{d}+{drv}" for d, drv in DRIVERS.items())
        raise ConfigError(
            f"the shop's services support {supported}, not {parsed.drivername!r}",
            source=source,
        )
    return parsed.set(drivername=f"{dialect}+{DRIVERS[dialect]}")


def make_engine(default_name: str, url: str | None = None) -> AsyncEngine:
    """The engine for ``database_url(default_name, url)``; nothing connects until first use."""
    parsed = database_url(default_name, url)
    if parsed.get_backend_name() == "postgresql":
        return create_async_engine(parsed, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    engine = create_async_engine(parsed, connect_args={"timeout": 15})

    @event.listens_for(engine.sync_engine, "do_connect")
    def _directory(*_: Any) -> None:
        if parsed.database and parsed.database != ":memory:":  # made at first use, not import
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA busy_timeout=15000")  # first: the WAL switch below may wait
        cur.execute("PRAGMA journal_mode=WAL")  # replicas share the file safely
        cur.close()

    return engine


async def ensure_schema(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create the database (PostgreSQL), then missing tables and indexes; safe in every replica.

    ``IF NOT EXISTS`` makes each statement a no-op for a table that exists.
    On PostgreSQL the transaction first takes an advisory lock, so replicas
    create one after the other; a lost race (a writer without the lock, or
    SQLite's locking) is retried: the table then exists, and the retry is a
    no-op.
    """
    if engine.dialect.name == "postgresql":
        await postgres.ensure_database(engine)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await postgres.lock_schema(conn)
                for table in metadata.sorted_tables:
                    await conn.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        await conn.execute(CreateIndex(index, if_not_exists=True))
            return
        except DBAPIError:
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))  # back off before the retry


def insert_ignoring_existing(
    conn: AsyncConnection, table: Table, conflict_on: Sequence[str] | None = None
) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING for this connection's dialect.

    ``conflict_on`` names the columns of the unique constraint whose conflict
    is skipped (any constraint when None); a conflict on another still raises.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict_on)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_on)
    raise ConfigError(f"no insert-or-skip for the {dialect!r} dialect", source=URL_SOURCE)


async def insert_or_skip(
    conn: AsyncConnection,
    table: Table,
    values: Mapping[str, Any],
    conflict_on: Sequence[str] | None = None,
) -> Any | None:
    """Insert one row unless it conflicts; its primary key if inserted, else None.

    Under concurrency this is the claim of a race that one request wins
    (Seata's lesson: insert-on-conflict, never select-then-insert). On
    PostgreSQL a conflicting row that another transaction has not committed
    yet makes this wait for that transaction: if it commits, this skips; if
    it rolls back, this inserts. SQLite serialises writers, so the same holds.
    """
    [key] = table.primary_key.columns
    stmt = insert_ignoring_existing(conn, table, conflict_on).values(dict(values))
    return (await conn.execute(stmt.returning(key))).scalar_one_or_none()


async def seed(conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` unless they are there already (every replica seeds at start).

    Seed rows carry their ids; on PostgreSQL the id sequence is then moved
    past them, or the first generated id would collide with a seed row.
    """
    if not rows:
        return
    await conn.execute(insert_ignoring_existing(conn, table), [dict(r) for r in rows])
    if conn.dialect.name == "postgresql":
        await postgres.advance_sequence(conn, table)
