"""Typed live configuration: a pydantic v2 model bound to a key prefix.

Key layout: each field is a key under the prefix, ``<prefix>/<field>``; a
nested model is either nested keys (``<prefix>/db/host``) or one JSON object
(``<prefix>/db`` = ``{"host": "h", "port": 5432}``), and nested keys win over
the same field inside a JSON object.

Values: a value that starts with ``{`` or ``[`` and parses as JSON is decoded
(objects, lists); every other value reaches pydantic as the plain string and
pydantic's lax mode converts it (``8080`` -> int, ``true`` -> bool, ``2.5`` ->
float, ``fast`` -> an enum or Literal). So ``str`` fields take text verbatim,
with no quoting. To fall back to a field's default, delete its key.

``BoundConfig`` loads and validates at ``start()``, then follows the store's
watch. Each change is validated as a whole model and swapped in with one
assignment, so ``bound.current`` is always one complete, immutable model (the
model must be frozen). An invalid change is rejected and logged with the key,
the value and pydantic's reason; the running model stays and ``last_error``
says why. Given the instance's id and tags, a gray release that targets the
instance (``qanat.runtime.gray``) is overlaid on the base keys.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from qanat.errors import ConfigError, Timeout
from qanat.ports import ConfigStore
from qanat.runtime import gray as _gray
from qanat.runtime._config_follow import Follower

log = logging.getLogger("qanat.config")
M = TypeVar("M", bound=BaseModel)
Listener = Callable[[M, M], object]


def decode_value(raw: str) -> object:
    """A stored string as pydantic should see it (see the module docstring)."""
    text = raw.strip()
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # not JSON after all: a plain string, and pydantic will say if that is wrong
    return raw


def nest(prefix: str, raw: Mapping[str, str]) -> dict[str, Any]:
    """Relative keys (``db/host``) and their values -> the nested dict pydantic validates."""
    root: dict[str, Any] = {}
    for rel in sorted(raw, key=lambda k: (k.count("/"), k)):  # parents before children
        parts = rel.split("/")
        if "" in parts:
            raise ConfigError("empty path segment in the key", source=f"{prefix}/{rel}")
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                parent = "/".join(parts[: depth + 1])
                raise ConfigError(
                    f"{prefix}/{parent} holds a plain value, so it cannot have "
                    "nested keys; delete one of the two",
                    source=f"{prefix}/{rel}",
                )
            node = child
        value = decode_value(raw[rel])
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            value = {**value, **node[parts[-1]]}
        node[parts[-1]] = value
    return root


def validate(model: type[M], prefix: str, raw: Mapping[str, str]) -> M:
    """Build ``model`` from ``raw``; ``ConfigError`` naming each bad key, its value and why."""
    data = nest(prefix, raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = [str(part) for part in err["loc"]]
            rel = next(
                ("/".join(loc[:n]) for n in range(len(loc), 0, -1) if "/".join(loc[:n]) in raw),
                "/".join(loc),
            )
            shown = f"value {raw[rel]!r}" if rel in raw else "key not set"
            problems.append((f"{prefix}/{rel}", f"{err['msg']} ({shown})"))
        first = problems[0][0]
        rest = "; ".join(f"{key}: {msg}" for key, msg in problems[1:])
        raise ConfigError(
            problems[0][1] + (f"; also {rest}" if rest else ""), source=first
        ) from None


async def load_raw(store: ConfigStore, prefix: str) -> dict[str, str]:
    """The keys under ``prefix/``, relative to it, with their values."""
    base = prefix.rstrip("/") + "/"
    return {k[len(base) :]: e.value for k, e in (await store.get_all(base)).items()}


@dataclass(frozen=True, slots=True)
class ConfigRejection:
    """Why the last change was not applied: the key, its value, pydantic's reason."""

    key: str
    value: str | None
    reason: str
    revision: int


class BoundConfig(Generic[M]):
    """A frozen pydantic model kept in step with the keys under ``prefix``.

    ``instance_id`` and ``tags`` identify this instance to gray releases;
    without them no gray release applies.
    """

    def __init__(
        self,
        store: ConfigStore,
        prefix: str,
        model: type[M],
        *,
        instance_id: str | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(
                f"expected a pydantic model class, got {model!r}", source="BoundConfig.model"
            )
        if not model.model_config.get("frozen"):
            raise ConfigError(
                f"{model.__name__} must be frozen so readers cannot change the shared "
                "instance: add model_config = ConfigDict(frozen=True)",
                source="BoundConfig.model",
            )
        if not prefix.strip("/"):
            raise ConfigError(
                "must name a key prefix, e.g. 'config/orders'", source="BoundConfig.prefix"
            )
        self.prefix = prefix.rstrip("/")
        self.model = model
        self.instance_id = instance_id
        self.tags = tuple(tags)
        self.last_error: ConfigRejection | None = None
        self.revision = 0  # store revision of the last change seen
        self.gray: _gray.GrayRelease | None = None  # the overlay in effect here, if any
        self._current: M | None = None
        self._applied: dict[str, str] | None = None
        self._listeners: list[Listener[M]] = []
        self._seen = asyncio.Condition()  # notified after each change is handled
        self._follower = Follower(store, self.prefix, self._rebuild)

    @property
    def current(self) -> M:
        """The model in effect: one immutable instance, whole old or whole new."""
        if self._current is None:
            raise RuntimeError(f"config {self.prefix!r} is not loaded: await start() first")
        return self._current

    def on_change(self, listener: Listener[M]) -> Callable[[], None]:
        """Call ``listener(old, new)`` (sync or async) after each applied change.

        Returns a function that unsubscribes.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def start(self) -> M:
        """Load and validate, then follow changes; ``ConfigError`` if the config is invalid.

        A gray overlay that does not validate is rejected (see ``last_error``)
        and the base config is used.
        """
        await self._follower.load()
        if self._follower.gray_error is not None:
            self._reject(self._follower.gray_error, {}, self._follower.revision)
        base, release = self._follower.base, self._targeting()
        try:
            model = validate(self.model, self.prefix, self._overlay(base, release))
        except ConfigError as exc:
            if release is None:
                raise
            self._reject(exc, base | dict(release.values), release.revision)
            model, release = validate(self.model, self.prefix, base), None
        self._current, self.gray = model, release
        self._applied = self._overlay(base, release)
        self.revision = self._follower.revision
        self._follower.start()
        return model

    def _targeting(self) -> _gray.GrayRelease | None:
        release = self._follower.release
        if release is not None and release.targets(self.instance_id, self.tags):
            return release
        return None

    @staticmethod
    def _overlay(base: dict[str, str], release: _gray.GrayRelease | None) -> dict[str, str]:
        return dict(base) if release is None else {**base, **release.values}

    async def wait_for_revision(self, revision: int, timeout: float = 5.0) -> None:
        """Wait until the change at store ``revision`` has been applied or rejected.

        ``revision`` must come from a write under this prefix or to its gray
        key (``store.set`` returns it); ``Timeout`` if it is not seen in time.
        """
        try:
            async with asyncio.timeout(timeout), self._seen:
                await self._seen.wait_for(lambda: self.revision >= revision)
        except TimeoutError:
            raise Timeout(
                f"config {self.prefix!r} did not see revision {revision} within "
                f"{timeout}s (at {self.revision})"
            ) from None

    async def _rebuild(self, revision: int, error: ConfigError | None) -> None:
        await self._rebuild_now(revision, error)
        async with self._seen:
            self.revision = max(self.revision, revision)
            self._seen.notify_all()

    async def _rebuild_now(self, revision: int, error: ConfigError | None) -> None:
        """Validate the store's current state and swap it in, or reject it."""
        if error is not None:  # the follower could not even read the change (bad gray doc)
            self._reject(error, {}, revision)
            return
        release = self._targeting()
        raw = self._overlay(self._follower.base, release)
        if raw == self._applied and release == self.gray:
            return  # e.g. a gray release that does not target this instance
        try:
            new = validate(self.model, self.prefix, raw)
        except ConfigError as exc:
            self._reject(exc, raw, revision)
            return
        old, self._current, self._applied, self.gray = self._current, new, raw, release
        self.last_error = None
        if old is not None and old != new:
            for listener in list(self._listeners):
                try:
                    result = listener(old, new)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # one bad listener must not stop the others or the watch
                    log.exception("config listener for %r failed", self.prefix)

    def _reject(self, exc: ConfigError, raw: Mapping[str, str], revision: int) -> None:
        key = exc.source or self.prefix
        rel = key[len(self.prefix) + 1 :] if key.startswith(self.prefix + "/") else None
        value = raw.get(rel) if rel is not None else None
        self.last_error = ConfigRejection(key, value, str(exc), revision)
        log.error(
            "config %r: rejected change at revision %d, keeping the running config: %s",
            self.prefix,
            revision,
            exc,
        )

    async def close(self) -> None:
        """Stop following the store; ``current`` keeps the last model."""
        await self._follower.close()

    async def __aenter__(self) -> BoundConfig[M]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["BoundConfig", "ConfigRejection", "decode_value", "load_raw", "nest", "validate"]
