"""What the shop's database code needs only on PostgreSQL.

- ``ensure_database``: create the service's database on first start, through
  the ``postgres`` maintenance database. A production deployment provisions
  the database (and a role without CREATEDB) instead; then this only checks
  that it can connect.
- ``lock_schema``: a transaction-scoped advisory lock, so replicas create the
  schema one after the other. Without it, two concurrent ``CREATE TABLE IF NOT
  EXISTS`` can both pass the existence check (made in ``transformCreateStmt``,
  before the catalog insert) and the loser fails with a unique violation on
  ``pg_type_typname_nsp_index`` or "relation already exists" (Stack Overflow,
  "CREATE SCHEMA IF NOT EXISTS raises duplicate key error", Craig Ringer's
  answer; pgsql-hackers, "create table if not exists" race). ``db.ensure_schema``
  also retries, for writers that do not take the lock.
- ``advance_sequence``: seed rows carry explicit ids, which a ``SERIAL`` /
  identity sequence does not see; it would hand out 1 on the first POST.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

MAINTENANCE_DATABASE = "postgres"  # exists in every cluster (initdb creates it)
INVALID_CATALOG_NAME = "3D000"  # "database ... does not exist"
DUPLICATE_DATABASE = "42P04"
UNIQUE_VIOLATION = "23505"  # a concurrent CREATE DATABASE can also fail on pg_database's index
# One 64-bit advisory lock key for "the shop's schema"; advisory locks are per database,
# so services with their own databases never wait for each other.
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"qanat.shop.schema").digest()[:8], signed=True)


def sqlstate(exc: DBAPIError) -> str | None:
    """The PostgreSQL SQLSTATE of a driver error (asyncpg's, as SQLAlchemy wraps it), if any."""
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


async def ensure_database(engine: AsyncEngine) -> None:
    """Connect once; when the database does not exist, create it, then return.

    Replicas starting together may all find it missing: the losers of the
    ``CREATE DATABASE`` race get "duplicate database" (or a unique violation)
    and carry on, since the database now exists. Any other failure propagates
    with a note saying how to provision the database by hand.
    """
    try:
        async with engine.connect():
            return
    except DBAPIError as exc:
        if sqlstate(exc) != INVALID_CATALOG_NAME:
            raise
    name = engine.url.database
    assert name, "a PostgreSQL URL without a database name connects to the user's own"
    admin = create_async_engine(
        engine.url.set(database=MAINTENANCE_DATABASE),
        isolation_level="AUTOCOMMIT",  # CREATE DATABASE cannot run inside a transaction
        poolclass=NullPool,
    )
    try:
        async with admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            await conn.execute(text(f"CREATE DATABASE {quoted}"))
    except DBAPIError as exc:
        if sqlstate(exc) in (DUPLICATE_DATABASE, UNIQUE_VIOLATION):
            return  # another replica created it first
        exc.add_note(
            f"database {name!r} does not exist and could not be created through the "
            f"{MAINTENANCE_DATABASE!r} database; create it (CREATE DATABASE {name}) or let "
            "the role create databases (ALTER ROLE ... CREATEDB)"
        )
        raise
    finally:
        await admin.dispose()


async def lock_schema(conn: AsyncConnection) -> None:
    """Wait for, then hold until the transaction ends, this database's schema lock."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


async def advance_sequence(conn: AsyncConnection, table: Table) -> None:
    """Move ``table``'s id sequence up to its largest id, never down.

    Only ever forward: a replica that is already serving may have taken ids
    past the seed rows, and moving the sequence back would hand them out
    again. ``pg_sequence_last_value`` is NULL until the first ``nextval``.
    """
    column = table.autoincrement_column
    if column is None:
        return
    preparer = conn.dialect.identifier_preparer
    await conn.execute(
        text(
            "SELECT setval(s.seq, m.top) FROM"
            " (SELECT pg_get_serial_sequence(:table, :column) AS seq) AS s,"
            f" (SELECT max({preparer.quote(column.name)}) AS top"
            f" FROM {preparer.format_table(table)}) AS m"
            " WHERE s.seq IS NOT NULL AND m.top IS NOT NULL"
            " AND coalesce(pg_sequence_last_value(s.seq::regclass), 0) < m.top"
        ),
        {"table": preparer.format_table(table), "column": column.name},
    )
