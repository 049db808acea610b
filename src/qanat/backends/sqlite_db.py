"""The SQLite plumbing shared by ``SqliteRegistry`` and ``SqliteConfigStore``.

One ``SqliteDb`` is one connection, used from one worker thread, so the event
loop never blocks on the file. Many processes may share the file safely:
WAL mode (readers never block the writer), ``busy_timeout`` (a writer waits
for the lock instead of failing), short transactions, and ``BEGIN IMMEDIATE``
for writes (take the write lock up front, so two read-then-write transactions
cannot deadlock upgrading their locks — the SQLite docs' advice for WAL).

``ChangeFeed`` tells local watchers that some process changed what they
watch: it polls one counter row every ``interval`` seconds (one query per
feed, not per watcher) and wakes the subscribers of the topics that moved;
local writes wake them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from qanat.errors import BackendError, BackendUnreachable, ConfigError, QanatError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another process's write lock before failing."""

POLL_INTERVAL = 0.025
"""Seconds between two checks for changes made by other processes (watch latency)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS qanat_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registry_leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_instances (
    service TEXT NOT NULL,
    id TEXT NOT NULL,
    lease INTEGER NOT NULL,
    data TEXT NOT NULL,
    output TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (service, id)
);
CREATE INDEX IF NOT EXISTS registry_instances_lease ON registry_instances (lease);
CREATE INDEX IF NOT EXISTS registry_leases_expires ON registry_leases (expires_at);
CREATE TABLE IF NOT EXISTS registry_services (
    service TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_services_revision ON registry_services (revision);
CREATE TABLE IF NOT EXISTS config_entries (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS config_log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT,
    type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS config_log_key ON config_log (key, revision);
CREATE TABLE IF NOT EXISTS config_trimmed (
    key TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
);
"""


def sqlite_path(url: str) -> Path:
    """The file named by ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError(f"expected a sqlite:// URL, got {url!r}", source="backend URL")
    if parts.netloc:
        raise ConfigError(
            f"{url!r} names a host ({parts.netloc!r}); a SQLite file is local: use "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db",
            source="backend URL",
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path == ":memory:" or path.endswith("/"):
        raise ConfigError(
            f"{url!r} does not name a file; use sqlite:///relative/path.db "
            "(or memory:// for an in-process store)",
            source="backend URL",
        )
    return Path(path)


def bump(conn: sqlite3.Connection, counter: str) -> int:
    """Increment the named counter in ``qanat_meta`` and return its new value."""
    row = conn.execute(
        "INSERT INTO qanat_meta (name, value) VALUES (?, 1) "
        "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        (counter,),
    ).fetchone()
    return int(row[0])


def set_counter(conn: sqlite3.Connection, name: str, value: int) -> None:
    """Set the named counter in ``qanat_meta`` to ``value``."""
    conn.execute(
        "INSERT INTO qanat_meta (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def counter(conn: sqlite3.Connection, name: str) -> int:
    """The current value of the named counter (0 if never bumped)."""
    row = conn.execute("SELECT value FROM qanat_meta WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


class SqliteDb:
    """One connection to a qanat SQLite file, driven from a single worker thread."""

    def __init__(self, url: str, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self.url = url
        self._conn = conn
        self._executor = executor
        self._closed = False

    @classmethod
    async def connect(cls, url: str) -> SqliteDb:
        """Open (creating it and its parent directories if needed) the file named by ``url``."""
        path = sqlite_path(url)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qanat-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _open, path)
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise BackendUnreachable(f"cannot open SQLite backend {url!r}: {exc}") from exc
        return cls(url, conn, executor)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot) in the worker thread."""
        return await self._run(fn, "BEGIN")

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; roll back if it raises."""
        return await self._run(fn, "BEGIN IMMEDIATE")

    async def _run(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        if self._closed:
            raise BackendError(f"the SQLite backend {self.url!r} is closed; open it again")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _transaction, self._conn, fn, begin)
        except QanatError:
            raise
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite backend {self.url!r}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection and stop the worker thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=False)


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each transaction is explicit.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL stays consistent
        # Several processes may start at once: create the schema under the write lock.
        conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
    conn.execute(begin)
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


Changed = Callable[[int | None, sqlite3.Connection], tuple[int, list[str] | None]]
"""``(last, conn)`` -> the counter now, and the topics changed since ``last`` (None: all)."""


def counter_moved(name: str) -> Changed:
    """A ``Changed`` for one plain counter: every subscriber wakes when it moves."""

    def changed(last: int | None, conn: sqlite3.Connection) -> tuple[int, list[str] | None]:
        value = counter(conn, name)
        return value, (None if value != last else [])

    return changed


class ChangeFeed:
    """Wake local waiters when a ``qanat_meta`` counter moves, whoever moved it.

    Subscribers name a topic (a registry watcher: its service); ``changed``
    says which topics moved since the last poll, so only their subscribers
    wake (by default every subscriber wakes whenever the counter moves). The
    poll task runs only while someone is subscribed, and belongs to the feed:
    ``close()`` cancels and awaits it.
    """

    def __init__(
        self,
        db: SqliteDb,
        name: str,
        interval: float = POLL_INTERVAL,
        changed: Changed | None = None,
    ) -> None:
        self._db, self._name, self._interval = db, name, interval
        self._changed = changed or counter_moved(name)
        self._events: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, topic: str = "") -> asyncio.Event:
        """A new event, set whenever ``topic`` changes; start polling if needed."""
        event = asyncio.Event()
        self._events.setdefault(topic, set()).add(event)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name=f"qanat-sqlite-feed-{self._name}")
        return event

    def unsubscribe(self, event: asyncio.Event, topic: str = "") -> None:
        """Stop waking ``event``; the poll stops at its next turn if nobody is left."""
        events = self._events.get(topic)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[topic]

    def notify(self, topics: Iterable[str] | None = None) -> None:
        """Wake the subscribers of ``topics`` now (None: every subscriber)."""
        groups = (
            list(self._events.values())
            if topics is None
            else [self._events.get(topic, set()) for topic in topics]
        )
        for events in groups:
            for event in events:
                event.set()

    async def _poll(self) -> None:
        last: int | None = None
        while self._events:
            topics: list[str] | None
            try:
                last, topics = await self._db.read(partial(self._changed, last))
            except BackendError:
                topics = []  # a busy or closing file: try again next turn
            if topics is None or topics:
                self.notify(topics)
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        """Stop polling and wake every subscriber so it can see the store is closed."""
        self.notify()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
