"""Gray (canary) release of configuration: try a change on some instances first.

A gray release is one key next to the base prefix, ``<prefix>@gray``, holding
a JSON document::

    {"values": {"timeout": "2.5", "db/host": "db-2"},   # overlay, same layout as the base keys
     "tags": ["canary"],                                 # instances carrying any of these tags
     "percent": 10.0}                                    # and/or this share of instance ids

One key, so starting, changing or ending a release is one atomic write: an
instance never sees half an overlay. An instance is *targeted* when it carries
one of ``tags`` or when its bucket is below ``percent`` (either rule alone
suffices). The bucket is a stable hash of the prefix and the instance id into
[0, 100): the same id always lands in the same bucket, and raising the
percentage only adds instances (as Apollo's and Nacos's gray rules, with
Argo Rollouts' stable canary subsets in mind).

``promote`` writes the overlay into the base keys and removes the release;
``rollback`` removes it. ``BoundConfig`` applies the overlay on the instances
it targets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qanat.errors import ConfigError, Conflict, NotFound
from qanat.ports import ConfigStore, Instance

SUFFIX = "@gray"


def gray_key(prefix: str) -> str:
    """The key that holds ``prefix``'s gray release."""
    return prefix.rstrip("/") + SUFFIX


def bucket(prefix: str, instance_id: str) -> float:
    """A stable bucket in [0, 100) for ``instance_id`` under ``prefix`` (SHA-256 based)."""
    digest = hashlib.sha256(f"{prefix.rstrip('/')}\n{instance_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2**64


def encode_value(value: object) -> str:
    """A config value as stored: strings verbatim, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class GrayRelease:
    """A running gray release of ``prefix``: overlay values and who gets them."""

    prefix: str
    values: Mapping[str, str] = field(default_factory=dict, hash=False)
    tags: tuple[str, ...] = ()
    percent: float | None = None
    revision: int = 0  # store revision of the release key

    def targets(self, instance_id: str | None, tags: Iterable[str] = ()) -> bool:
        """Whether the instance with this id and these tags gets the overlay."""
        if self.tags and not set(self.tags).isdisjoint(tags):
            return True
        return (
            self.percent is not None
            and instance_id is not None
            and bucket(self.prefix, instance_id) < self.percent
        )

    def select(self, instances: Iterable[Instance]) -> list[Instance]:
        """The instances this release targets."""
        return [i for i in instances if self.targets(i.id, i.tags)]

    def to_json(self) -> str:
        """The stored document (see the module docstring)."""
        doc: dict[str, Any] = {
            "values": dict(self.values),
            "tags": list(self.tags),
            "percent": self.percent,
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def parse_release(prefix: str, text: str, revision: int) -> GrayRelease:
    """Decode the stored document; ``ConfigError`` naming the key when it is malformed."""
    where = gray_key(prefix)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc.msg} at {exc.pos})", source=where) from None
    if not isinstance(doc, dict):
        raise ConfigError("must be a JSON object with values, tags, percent", source=where)
    values = doc.get("values", {})
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ConfigError("'values' must be an object of string values", source=where)
    return _release(prefix, values, doc.get("tags") or (), doc.get("percent"), revision, where)


def _release(
    prefix: str,
    values: Mapping[str, str],
    tags: Iterable[str],
    percent: object,
    revision: int,
    where: str,
) -> GrayRelease:
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise ConfigError(f"'tags' must be a list of non-empty strings, got {tags!r}", source=where)
    if percent is not None and (
        isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100
    ):
        raise ConfigError(
            f"'percent' must be a number from 0 to 100, got {percent!r}", source=where
        )
    tags = tuple(tags)
    if not tags and percent is None:
        raise ConfigError("say who gets the release: give tags, percent, or both", source=where)
    if not values:
        raise ConfigError("a gray release needs at least one value", source=where)
    pct = None if percent is None else float(percent)
    return GrayRelease(prefix.rstrip("/"), dict(values), tags, pct, revision)


async def start(
    store: ConfigStore,
    prefix: str,
    values: Mapping[str, object],
    *,
    tags: Iterable[str] = (),
    percent: float | None = None,
    model: Any = None,
) -> GrayRelease:
    """Start a gray release of ``values`` (field name or nested ``a/b`` key -> value).

    Non-string values are stored as JSON. With ``model`` (a pydantic model
    class) the base config overlaid with ``values`` is validated first and a
    ``ConfigError`` names the bad key. Raises ``Conflict`` if a release of this
    prefix is already running: promote or roll it back first.
    """
    prefix = prefix.rstrip("/")
    encoded = {k.strip("/"): encode_value(v) for k, v in values.items()}
    release = _release(prefix, encoded, tags, percent, 0, gray_key(prefix))
    if model is not None:
        from qanat.runtime.typed_config import load_raw, validate  # cycle: it imports us

        validate(model, prefix, {**await load_raw(store, prefix), **encoded})
    if not await store.compare_and_set(gray_key(prefix), release.to_json(), expected_revision=0):
        raise Conflict(
            f"a gray release of {prefix!r} is already running "
            f"(key {gray_key(prefix)!r}); promote or roll it back first"
        )
    return await _require(store, prefix)


async def status(store: ConfigStore, prefix: str) -> GrayRelease | None:
    """The running gray release of ``prefix``, or None."""
    entry = await store.get(gray_key(prefix))
    return None if entry is None else parse_release(prefix, entry.value, entry.revision)


async def _require(store: ConfigStore, prefix: str) -> GrayRelease:
    release = await status(store, prefix)
    if release is None:
        raise NotFound(f"no gray release of {prefix.rstrip('/')!r} is running")
    return release


async def promote(store: ConfigStore, prefix: str) -> GrayRelease:
    """Make the gray values the base config for everyone, then end the release.

    The base keys are written first, so targeted instances see no change at
    all; each other instance moves to the new values key by key. ``Conflict``
    if the release changed while it was being promoted (nothing is removed).
    """
    release = await _require(store, prefix)
    for key, value in sorted(release.values.items()):
        await store.set(f"{release.prefix}/{key}", value)
    current = await store.get(gray_key(prefix))
    if current is None or current.revision != release.revision:
        raise Conflict(f"the gray release of {release.prefix!r} changed while being promoted")
    await store.delete(gray_key(prefix))
    return release


async def rollback(store: ConfigStore, prefix: str) -> GrayRelease:
    """End the release without touching the base config; every instance returns to it."""
    release = await _require(store, prefix)
    await store.delete(gray_key(prefix))
    return release


__all__ = [
    "SUFFIX",
    "GrayRelease",
    "bucket",
    "encode_value",
    "gray_key",
    "parse_release",
    "promote",
    "rollback",
    "start",
    "status",
]
