"""Pure helpers of the etcd backend: URL parsing, backoff, request builders.

- ``parse_etcd_url``: ``etcd://[user:pw@]host:port[,host:port...][?options]``,
  checked with clear ``ConfigError``s.
- ``Backoff``: capped exponential backoff with full jitter (AWS Architecture
  Blog, "Exponential Backoff and Jitter", 2015) for the reconnect loops.
- ``put_op``/``delete_op``/``compare_*``: etcd v3 transaction pieces.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aetcd
from aetcd import rpc

from qanat.errors import ConfigError

DEFAULT_PORT = 2379


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """What an ``etcd://`` URL says. Defaults are the ones the URL may override.

    ``prefix``: every key qanat writes lives under it (``?prefix=/qanat``), so
    tests and tenants get separate namespaces. ``timeout``: deadline of one
    request in seconds. ``connect_timeout``: how long ``open`` waits for a first
    answer before ``BackendUnreachable``.
    """

    endpoints: tuple[tuple[str, int], ...]
    url: str  # as given, with any password masked: used in error messages
    prefix: str = "/qanat"
    timeout: float = 5.0
    connect_timeout: float = 3.0
    username: str | None = None
    password: str | None = None


_OPTIONS = ("prefix", "timeout", "connect_timeout")


def parse_etcd_url(url: str) -> EtcdSettings:
    """Parse ``etcd://[user:pw@]host[:port][,host[:port]...][?prefix=/p&timeout=s&connect_timeout=s]``."""
    parts = urlsplit(url)
    if parts.scheme != "etcd":
        raise ConfigError(f"expected an etcd:// URL, got {url!r}", source="backend URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    shown = url.replace(userinfo, userinfo.split(":")[0] + ":***") if ":" in userinfo else url
    username, _, password = userinfo.partition(":")
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"{shown!r} has a path ({parts.path!r}); put a key prefix in ?prefix=/name instead",
            source="backend URL",
        )
    endpoints = tuple(_endpoint(h.strip(), shown) for h in hosts.split(","))
    options: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise ConfigError(
                f"unknown option {name!r} in {shown!r}; allowed: {', '.join(_OPTIONS)}",
                source="backend URL",
            )
        options[name] = _prefix(value, shown) if name == "prefix" else _seconds(name, value, shown)
    return EtcdSettings(
        endpoints, shown, username=username or None, password=password or None, **options
    )


def _endpoint(text: str, url: str) -> tuple[str, int]:
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):  # [::1]:2379
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"bad endpoint {text!r} in {url!r}; expected host:port, e.g. 127.0.0.1:2379",
            source="backend URL",
        )
    return host, int(port)


def _prefix(value: str, url: str) -> str:
    prefix = value.rstrip("/")
    if not prefix.startswith("/") or "\x00" in prefix:
        raise ConfigError(
            f"prefix must start with '/' and name a namespace, e.g. /qanat; "
            f"got {value!r} in {url!r}",
            source="backend URL",
        )
    return prefix


def _seconds(name: str, value: str, url: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:
        raise ConfigError(
            f"{name} must be a number of seconds in (0, 3600), got {value!r} in {url!r}",
            source="backend URL",
        )
    return seconds


class Backoff:
    """Capped exponential backoff with full jitter: wait U(0, min(cap, base * 2**n)).

    Source: AWS Architecture Blog, "Exponential Backoff and Jitter" (2015).
    """

    def __init__(self, base: float = 0.05, cap: float = 1.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        """The next delay in seconds (grows with each call until ``reset``)."""
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it; re-raise only if *we* are being cancelled too."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, end)`` exactly the keys starting with ``prefix``."""
    return bytes(aetcd.utils.prefix_range_end(prefix)) if prefix else b"\x00"


def put_op(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete_op(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def compare_mod(key: bytes, revision: int) -> Any:
    """``mod_revision(key) == revision``; etcd compares an absent key as revision 0."""
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision
    )


def compare_version(key: bytes, result: Any, version: int) -> Any:
    return rpc.Compare(key=key, target=rpc.Compare.VERSION, result=result, version=version)


__all__ = [
    "DEFAULT_PORT",
    "Backoff",
    "EtcdSettings",
    "cancel_task",
    "compare_mod",
    "compare_version",
    "delete_op",
    "parse_etcd_url",
    "prefix_end",
    "put_op",
]
