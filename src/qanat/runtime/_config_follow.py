"""``Follower``: the store side of ``BoundConfig`` — load a prefix, then follow its watches.

It mirrors the base keys under a prefix and the prefix's gray-release key,
and calls ``on_change(revision, error)`` after each change it applies, so
``BoundConfig`` can validate and swap in the new model.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from qanat.errors import BackendError, ConfigError, WatchCompacted
from qanat.ports import ConfigChange, ConfigStore
from qanat.runtime import gray as _gray
from qanat.runtime._tasks import TaskOwner, backoff_delay

log = logging.getLogger("qanat.config")

OnChange = Callable[[int, ConfigError | None], Awaitable[None]]


class Follower:
    """Mirrors the base keys and the gray key of one prefix, following their watches.

    Each watch resumes from the revision after the last one loaded
    (``start_revision``), so nothing slips between the load and the watch; a
    change at or below a key's known revision is a replay and is skipped. A
    failed watch is retried with full-jitter backoff after a fresh load. When
    the store can no longer replay that far (``WatchCompacted``), the fresh
    load stands in for the lost changes and the watch starts at the store's
    ``compact_revision``.
    """

    def __init__(self, store: ConfigStore, prefix: str, on_change: OnChange) -> None:
        self._store, self._prefix, self._on_change = store, prefix, on_change
        self.base: dict[str, str] = {}
        self.release: _gray.GrayRelease | None = None
        self.gray_error: ConfigError | None = None
        self.revision = 0
        self._revs: dict[str, int] = {}
        self._floors = {"base": 0, "gray": 0}
        self._tasks = TaskOwner(f"config:{prefix}")

    async def load(self) -> None:
        await self._load_base()
        await self._load_gray()

    async def _load_base(self) -> None:
        entries = await self._store.get_all(self._prefix + "/")
        cut = len(self._prefix) + 1
        self.base = {k[cut:]: e.value for k, e in entries.items()}
        self._revs = {k[cut:]: e.revision for k, e in entries.items()}
        self._floors["base"] = max(self._revs.values(), default=0)
        self.revision = max(self.revision, self._floors["base"])

    async def _load_gray(self) -> None:
        key = _gray.gray_key(self._prefix)
        entry = await self._store.get(key)
        last = await self._store.history(key, limit=1)  # a deletion leaves no entry
        floor = max(entry.revision if entry else 0, last[0].revision if last else 0)
        self._floors["gray"] = floor
        self.revision = max(self.revision, floor)
        self.gray_error = None
        self.release = None
        if entry is not None:
            try:
                self.release = _gray.parse_release(self._prefix, entry.value, entry.revision)
            except ConfigError as exc:
                self.gray_error = exc

    def _apply(self, part: str, change: ConfigChange) -> ConfigError | None:
        if part == "gray":
            self._floors["gray"] = change.revision
            if change.new_value is None:
                self.release = None
            else:
                try:
                    self.release = _gray.parse_release(
                        self._prefix, change.new_value, change.revision
                    )
                except ConfigError as exc:
                    return exc  # keep the release we had
            return None
        rel = change.key[len(self._prefix) + 1 :]
        self._revs[rel] = change.revision
        if change.new_value is None:
            self.base.pop(rel, None)
        else:
            self.base[rel] = change.new_value
        return None

    def _known(self, part: str, change: ConfigChange) -> bool:
        floor = self._floors[part]
        if part == "base":
            floor = max(floor, self._revs.get(change.key[len(self._prefix) + 1 :], 0))
        return change.revision <= floor

    def start(self) -> None:
        self._tasks.start(self._follow("base"), name="base")
        self._tasks.start(self._follow("gray"), name="gray")

    async def _follow(self, part: str) -> None:
        key, prefix = (
            (self._prefix + "/", True) if part == "base" else (_gray.gray_key(self._prefix), False)
        )
        attempt, reload, resume = 0, False, 0
        while True:
            try:
                if reload:  # after an outage or a compaction: start again from the store's state
                    await (self._load_base() if part == "base" else self._load_gray())
                    # What the store can no longer replay is in the state just loaded.
                    self._floors[part] = max(self._floors[part], resume - 1)
                    await self._on_change(
                        self.revision, self.gray_error if part == "gray" else None
                    )
                reload = True
                watch = self._store.watch(key, prefix=prefix, start_revision=self._floors[part] + 1)
                try:
                    async for change in watch:
                        attempt = 0
                        if not self._known(part, change):
                            error = self._apply(part, change)
                            self.revision = max(self.revision, change.revision)
                            await self._on_change(change.revision, error)
                finally:
                    aclose = getattr(watch, "aclose", None)
                    if aclose is not None:  # end the backend's watch now, not at GC
                        await aclose()
                raise BackendError("the config store ended the watch")
            except WatchCompacted as exc:
                log.info("config %r: %s watch: %s; reloading", self._prefix, part, exc)
                if exc.compact_revision > self._floors[part] + 1:
                    resume = exc.compact_revision
                    continue  # the next watch starts later: reload at once
            except Exception as exc:  # keep the running config; reconnect below
                log.warning("config %r: %s watch failed (%s); retrying", self._prefix, part, exc)
            await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=15.0, rand=random.random()))
            attempt += 1

    async def close(self) -> None:
        await self._tasks.close()


__all__ = ["Follower", "OnChange"]
