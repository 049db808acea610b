"""A service's own database: SQLAlchemy async, SQLite by default, PostgreSQL by URL.

Replicas of a service start together and share one database. Creating the
schema is therefore idempotent (``CREATE TABLE IF NOT EXISTS`` in one
transaction, not SQLAlchemy's check-then-create, which races), and seeding
uses inserts that ignore rows another replica wrote first.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, MetaData, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateIndex, CreateTable

SCHEMA_ATTEMPTS = 5


def make_engine(default_name: str) -> AsyncEngine:
    """The engine for ``QANAT_DATABASE_URL`` (set by ``qanat up``), else a local SQLite file."""
    url = os.environ.get("QANAT_DATABASE_URL") or f"sqlite+aiosqlite:///.qanat/{default_name}.db"
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 15})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(conn: DBAPIConnection, _: ConnectionPoolEntry) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA busy_timeout=15000")  # first: the WAL switch below may wait
            cur.execute("PRAGMA journal_mode=WAL")  # replicas share the file safely
            cur.close()

        return engine
    return create_async_engine(url, pool_size=10)


async def ensure_schema(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create missing tables and indexes; safe when every replica runs it at once.

    ``IF NOT EXISTS`` makes each statement a no-op for a table that exists.
    PostgreSQL can still fail one of two concurrent ``CREATE TABLE IF NOT
    EXISTS`` on its catalog's unique index; that lost race is retried (the
    table then exists, and the retry is a no-op).
    """
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            async with engine.begin() as conn:
                for table in metadata.sorted_tables:
                    await conn.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        await conn.execute(CreateIndex(index, if_not_exists=True))
            return
        except DBAPIError:
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))  # back off before the retry


def insert_ignoring_existing(conn: AsyncConnection, table: Table) -> Insert:
    """An INSERT that skips rows whose key already exists (seeding by several replicas)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return table.insert().prefix_with("IGNORE")  # MySQL's spelling


async def seed(conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` unless they are there already (every replica seeds at start)."""
    if rows:
        await conn.execute(insert_ignoring_existing(conn, table), [dict(r) for r in rows])
