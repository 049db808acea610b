"""A service's own database: SQLAlchemy async, SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import MetaData, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry


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
            cur.execute("PRAGMA journal_mode=WAL")  # replicas share the file safely
            cur.execute("PRAGMA busy_timeout=15000")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=10)


async def ensure_schema(engine: AsyncEngine, metadata: MetaData) -> None:
    """Create missing tables; replicas starting together may race, so a lost race is retried."""
    for attempt in range(5):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            return
        except OperationalError as exc:
            if "already exists" not in str(exc) or attempt == 4:
                raise
