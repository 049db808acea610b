"""Validation and encoding shared by the discovery and config backends.

Every backend checks its input the same way, so a bad call fails with the same
clear ``ConfigError`` whichever backend is behind the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from typing import Any
from urllib.parse import urlsplit

from qanat.errors import ConfigError, WatchCompacted
from qanat.ports import ConfigChange, Health, Instance

HISTORY_LIMIT = 100
"""Changes kept per config key (``history`` and ``start_revision`` replay reach this far)."""

COMPACT_DELETED_AFTER = 1000
"""Store revisions after which a deleted key's change log is dropped (memory, SQLite).

The bound on the log of keys that no longer exist: once a key has stayed
deleted for this many revisions, its history goes (``history`` returns
nothing for it), and a watch asking to replay from at or before that
deletion raises ``WatchCompacted``, as etcd does after a compaction.
"""

MIN_TTL = 1.0
"""Shortest lease TTL accepted, in seconds (etcd's minimum lease TTL is 1 s too)."""


def check_ttl(ttl: float) -> float:
    """Return ``ttl`` as a float, or raise ``ConfigError`` if it is not a usable lease TTL."""
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not math.isfinite(ttl):
        raise ConfigError(f"must be a finite number of seconds, got {ttl!r}", source="ttl")
    if ttl < MIN_TTL:
        raise ConfigError(
            f"must be at least {MIN_TTL:g} s (a lease shorter than that cannot be renewed "
            f"reliably), got {ttl!r}",
            source="ttl",
        )
    return float(ttl)


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a usable service name or instance id, else ``ConfigError``."""
    if not isinstance(value, str) or not value or value.strip() != value:
        raise ConfigError(
            f"must be a non-empty string without surrounding spaces, got {value!r}", source=what
        )
    if "/" in value or "\x00" in value:
        raise ConfigError(f"must not contain '/' or NUL, got {value!r}", source=what)
    return value


def check_instance(instance: Instance) -> Instance:
    """Validate the fields a backend relies on; return the instance unchanged."""
    if not isinstance(instance, Instance):
        raise ConfigError(f"expected a qanat.Instance, got {type(instance).__name__}")
    check_name(instance.service, "instance.service")
    check_name(instance.id, "instance.id")
    if not instance.address:
        raise ConfigError("must not be empty", source=f"instance {instance.id!r}: address")
    if not 0 < instance.port < 65536:
        raise ConfigError(
            f"must be between 1 and 65535, got {instance.port!r}",
            source=f"instance {instance.id!r}: port",
        )
    if instance.weight < 0:
        raise ConfigError(
            f"must be >= 0, got {instance.weight!r}", source=f"instance {instance.id!r}: weight"
        )
    return instance


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """Return ``key`` if it is a usable config key (or prefix, when ``allow_empty``)."""
    if not isinstance(key, str):
        raise ConfigError(f"must be a string, got {type(key).__name__}", source="config key")
    if not key and not allow_empty:
        raise ConfigError("must not be empty", source="config key")
    if "\x00" in key:
        raise ConfigError(f"must not contain NUL, got {key!r}", source="config key")
    return key


def check_value(value: str) -> str:
    """Return ``value`` if it is a string config value."""
    if not isinstance(value, str):
        raise ConfigError(
            f"must be a string (serialise it first), got {type(value).__name__}",
            source="config value",
        )
    return value


def check_revision(revision: int, what: str) -> int:
    """Return ``revision`` if it is a non-negative int."""
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise ConfigError(f"must be an integer >= 0, got {revision!r}", source=what)
    return revision


def check_limit(limit: int) -> int:
    """Return ``limit`` if it is a positive int."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigError(f"must be an integer >= 1, got {limit!r}", source="history limit")
    return limit


def matches(watched: str, prefix: bool, key: str) -> bool:
    """Whether a change to ``key`` concerns a watch on ``watched`` (plain prefix, as etcd)."""
    return key.startswith(watched) if prefix else key == watched


def compacted_error(
    key: str, prefix: bool, start_revision: int, floor: int, where: str
) -> WatchCompacted:
    """The error for a watch that asks to replay from at or before ``floor`` (the highest
    revision no longer kept for what it watches)."""
    what = f"keys under {key!r}" if prefix else f"key {key!r}"
    return WatchCompacted(
        f"{where} cannot replay {what} from revision {start_revision}: changes up to "
        f"{floor} are no longer kept; re-read with get/get_all and watch from "
        f"start_revision={floor + 1} or later",
        compact_revision=floor + 1,
    )


def keep_since(changes: list[ConfigChange], start_revision: int) -> list[ConfigChange]:
    """The changes at or after ``start_revision``, oldest first."""
    return sorted((c for c in changes if c.revision >= start_revision), key=lambda c: c.revision)


def instance_to_json(instance: Instance, output: str = "") -> str:
    """Encode an instance as compact JSON (the wire and storage format of every backend).

    ``output`` (the last health check's output, as given to ``set_health``) is
    stored only when not empty, under ``"output"``.
    """
    data: dict[str, Any] = {
        "id": instance.id,
        "service": instance.service,
        "address": instance.address,
        "port": instance.port,
        "tags": list(instance.tags),
        "metadata": dict(instance.metadata),
        "weight": instance.weight,
        "version": instance.version,
        "zone": instance.zone,
        "health": instance.health.value,
        "enabled": instance.enabled,
    }
    if output:
        data["output"] = output
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def output_from_json(text: str) -> str:
    """The check output stored by ``instance_to_json`` ("" when none)."""
    return str(json.loads(text).get("output", ""))


def instance_from_json(text: str) -> Instance:
    """Decode ``instance_to_json`` output; unknown fields are ignored (forward compatible)."""
    data: dict[str, Any] = json.loads(text)
    return Instance(
        id=data["id"],
        service=data["service"],
        address=data["address"],
        port=int(data["port"]),
        tags=tuple(data.get("tags", ())),
        metadata=dict(data.get("metadata", {})),
        weight=int(data.get("weight", 1)),
        version=data.get("version", ""),
        zone=data.get("zone", ""),
        health=Health(data.get("health", Health.PASSING.value)),
        enabled=bool(data.get("enabled", True)),
    )


def memory_namespace(url: str, scheme: str = "memory") -> str | None:
    """The namespace named by ``memory://name`` (None for a fresh private one)."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ConfigError(f"expected a {scheme}:// URL, got {url!r}", source="backend URL")
    name = (parts.netloc + parts.path).strip("/")
    return name or None


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task we own and wait for it to finish.

    Only the cancellation we asked for is swallowed: if the caller itself is
    being cancelled, that cancellation propagates.
    """
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError
