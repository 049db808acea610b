"""``SqliteConfigStore``: the config center in one SQLite file shared by many processes.

Every write is one ``BEGIN IMMEDIATE`` transaction that bumps the store-wide
revision (a counter row), updates ``config_entries`` and appends to
``config_log`` — the change log that serves ``history`` and watches. What the
log keeps, so ``history`` and ``start_revision`` replay reach that far:

- the last 100 changes of each key: older ones are trimmed in the same
  transaction, and ``config_trimmed`` remembers the newest revision trimmed
  per key;
- a deleted key's changes until it has stayed deleted for 1,000 revisions
  (``COMPACT_DELETED_AFTER``): each write looks at the deletions that just
  crossed that age and drops the whole log of each key that is still deleted
  (a few rows per write, amortised); the ``config_compacted`` counter is the
  newest revision so dropped.

So the log holds at most 100 rows per live key plus those of keys deleted in
the last 1,000 revisions. A watch remembers how far it has read and, whenever
the change feed (polled every 25 ms) says the revision moved, reads the log
after that point: changes made by any process reach it in order. If changes
it still needs were trimmed or compacted (a replay from too far back, or a
watcher more than 100 changes of one key behind) it raises
``WatchCompacted`` rather than skip them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from functools import partial
from typing import Self

from qanat.backends._common import (
    COMPACT_DELETED_AFTER,
    HISTORY_LIMIT,
    check_key,
    check_limit,
    check_revision,
    check_value,
    compacted_error,
)
from qanat.backends.sqlite_db import ChangeFeed, SqliteDb, bump, counter, set_counter
from qanat.errors import BackendError
from qanat.ports import ChangeType, ConfigChange, ConfigEntry

_COUNTER = "config"
_COMPACTED = "config_compacted"  # newest revision dropped with a deleted key's whole log
_SCANNED = "config_compact_scan"  # deletions up to this revision have been considered
_COLUMNS = "key, old_value, new_value, type, revision"


def _change(row: tuple[str, str | None, str | None, str, int]) -> ConfigChange:
    key, old, new, kind, revision = row
    return ConfigChange(key, old, new, ChangeType(kind), revision)


def _write(conn: sqlite3.Connection, *, key: str, value: str | None, expected: int | None) -> int:
    """Write (or, with ``value=None``, delete) ``key``; 0 if ``expected`` or absence refused it."""
    row = conn.execute(
        "SELECT value, revision FROM config_entries WHERE key = ?", (key,)
    ).fetchone()
    old, current = (row[0], row[1]) if row else (None, 0)
    if expected is not None and current != expected:
        return 0
    if value is None and row is None:
        return 0
    revision = bump(conn, _COUNTER)
    if value is None:
        conn.execute("DELETE FROM config_entries WHERE key = ?", (key,))
        kind = ChangeType.DELETED
    else:
        conn.execute(
            "INSERT INTO config_entries (key, value, revision) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision",
            (key, value, revision),
        )
        kind = ChangeType.MODIFIED if row else ChangeType.ADDED
    conn.execute(
        f"INSERT INTO config_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (key, old, value, kind.value, revision),
    )
    trimmed = conn.execute(  # keep the newest HISTORY_LIMIT changes of this key
        "DELETE FROM config_log WHERE key = ? AND revision <= (SELECT revision FROM config_log "
        "WHERE key = ? ORDER BY revision DESC LIMIT 1 OFFSET ?) RETURNING revision",
        (key, key, HISTORY_LIMIT),
    ).fetchall()
    if trimmed:
        conn.execute(
            "INSERT INTO config_trimmed (key, revision) VALUES (?, ?) ON CONFLICT (key) "
            "DO UPDATE SET revision = max(revision, excluded.revision)",
            (key, max(r for (r,) in trimmed)),
        )
    _compact(conn, revision)
    return revision


def _compact(conn: sqlite3.Connection, revision: int) -> None:
    """Drop the logs of keys deleted ``COMPACT_DELETED_AFTER`` revisions ago and still gone."""
    cutoff = revision - COMPACT_DELETED_AFTER
    scanned = counter(conn, _SCANNED)
    if cutoff <= scanned:
        return
    compacted = counter(conn, _COMPACTED)
    deletions = conn.execute(
        "SELECT key, revision FROM config_log WHERE revision > ? AND revision <= ? "
        "AND type = 'deleted'",
        (scanned, cutoff),
    ).fetchall()
    for key, deleted_at in deletions:
        last = conn.execute("SELECT max(revision) FROM config_log WHERE key = ?", (key,))
        if last.fetchone()[0] != deleted_at:
            continue  # written again since: the key's log lives on
        if conn.execute("SELECT 1 FROM config_entries WHERE key = ?", (key,)).fetchone():
            continue
        conn.execute("DELETE FROM config_log WHERE key = ?", (key,))
        conn.execute("DELETE FROM config_trimmed WHERE key = ?", (key,))
        compacted = max(compacted, deleted_at)
    set_counter(conn, _COMPACTED, compacted)
    set_counter(conn, _SCANNED, cutoff)


def _log_after(
    conn: sqlite3.Connection, *, key: str, prefix: bool, after: int
) -> tuple[list[ConfigChange], int]:
    """Logged changes to ``key`` (or under it) after revision ``after``, oldest first, and
    the store revision they run up to; ``WatchCompacted`` if some are no longer kept."""
    match, args = ("substr(key, 1, ?) = ?", (len(key), key)) if prefix else ("key = ?", (key,))
    trimmed = conn.execute(f"SELECT max(revision) FROM config_trimmed WHERE {match}", args)
    floor = max(trimmed.fetchone()[0] or 0, counter(conn, _COMPACTED))
    if floor and floor > after:  # 0: nothing was ever dropped
        raise compacted_error(key, prefix, after + 1, floor, "the SQLite store")
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM config_log WHERE revision > ? AND {match} ORDER BY revision",
        (after, *args),
    )
    return [_change(row) for row in rows], counter(conn, _COUNTER)


class SqliteConfigStore:
    """A ``ConfigStore`` in a SQLite file; see the module docstring for the log and watches."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db
        self._feed = ChangeFeed(db, _COUNTER)
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``sqlite:///path.db`` (created, with its directories, if missing)."""
        return cls(await SqliteDb.connect(url))

    async def _apply(self, key: str, value: str | None, expected: int | None) -> int:
        revision = await self._db.write(partial(_write, key=key, value=value, expected=expected))
        if revision:
            self._feed.notify()
        return revision

    async def get(self, key: str) -> ConfigEntry | None:
        """The key's value and last-modified revision, or None."""
        check_key(key)
        row = await self._db.read(
            lambda c: c.execute(
                "SELECT value, revision FROM config_entries WHERE key = ?", (key,)
            ).fetchone()
        )
        return ConfigEntry(key, row[0], row[1]) if row else None

    async def set(self, key: str, value: str) -> int:
        """Write ``value``; return the new store revision."""
        return await self._apply(check_key(key), check_value(value), None)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed (a missing key uses no revision)."""
        return bool(await self._apply(check_key(key), None, None))

    async def get_all(self, prefix: str) -> dict[str, ConfigEntry]:
        """Every entry whose key starts with ``prefix``, in key order."""
        check_key(prefix, allow_empty=True)
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT key, value, revision FROM config_entries "
                "WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        )
        return {key: ConfigEntry(key, value, revision) for key, value, revision in rows}

    async def compare_and_set(self, key: str, value: str, *, expected_revision: int) -> bool:
        """Write only if the key was last modified at ``expected_revision`` (0: absent)."""
        check_key(key)
        check_value(value)
        check_revision(expected_revision, "expected_revision")
        return bool(await self._apply(key, value, expected_revision))

    async def history(self, key: str, *, limit: int = 20) -> list[ConfigChange]:
        """The key's most recent changes (at most 100 are kept), newest first."""
        check_key(key)
        check_limit(limit)
        rows = await self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM config_log WHERE key = ? ORDER BY revision DESC LIMIT ?",
                (key, limit),
            ).fetchall()
        )
        return [_change(row) for row in rows]

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[ConfigChange]:
        """Changes to ``key`` (or under it), replaying from ``start_revision`` first."""
        check_key(key, allow_empty=prefix)
        if start_revision is not None:
            check_revision(start_revision, "start_revision")
        event = self._feed.subscribe()
        try:
            if start_revision is None:
                seen = await self._db.read(lambda c: counter(c, _COUNTER))
            else:
                seen = start_revision - 1
            while not self._closed:
                event.clear()
                read = partial(_log_after, key=key, prefix=prefix, after=seen)
                try:
                    changes, head = await self._db.read(read)
                except BackendError:
                    if self.closed:
                        return
                    raise
                for change in changes:
                    yield change
                # Everything up to `head` that concerns us has been delivered, so a
                # compaction of older, unrelated revisions cannot fail a live watch.
                seen = max(seen, head)
                if not changes:
                    await event.wait()
        finally:
            self._feed.unsubscribe(event)

    async def close(self) -> None:
        """End this client's watches and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._feed.close()
        await self._db.close()


__all__ = ["SqliteConfigStore"]
