"""etcd plumbing shared by ``EtcdRegistry`` and ``EtcdConfigStore``.

- ``parse_etcd_url``: ``etcd://[user:password@]host:port[,host:port...][?options]``.
- ``EtcdConnection``: one gRPC channel per endpoint (made by ``aetcd``), the
  current endpoint, and the error boundary: every gRPC/aetcd failure leaves as
  ``BackendUnreachable`` (etcd did not answer) or ``BackendError`` (it answered
  no), with the URL in the message.
- ``watch_batches``: one etcd watch stream, yielding each response's events
  together (one transaction's changes arrive together) and raising
  ``WatchCompacted`` when etcd can no longer replay from the asked revision.
- ``Backoff``: capped exponential backoff with full jitter (AWS Architecture
  Blog, "Exponential Backoff and Jitter", 2015) for the reconnect loops.

The raw etcd v3 gRPC API is used (``aetcd.rpc`` stubs) rather than aetcd's
wrappers: it exposes reads at a revision, transactions with both branches and
their header revision, and per-stream watches with ``compact_revision``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aetcd
from aetcd import rpc

from qanat.errors import BackendError, BackendUnreachable, ConfigError

DEFAULT_PORT = 2379
_UNREACHABLE = {rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED}
# Short reconnect backoff in the channel itself: gRPC's default grows to 120 s,
# far longer than a lease TTL, so a restarted etcd would be noticed too late.
_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,  # etcd accepts pings every >= 5 s by default
    "grpc.keepalive_timeout_ms": 5_000,
}


class WatchCompacted(BackendError):
    """etcd cannot replay a watch from the asked revision (compacted, or the store was reset).

    ``compact_revision`` is the oldest revision etcd can still replay from
    (0 when the store's revision went backwards, as after a restore or a wipe).
    """

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class ConnectionClosed(BackendError):
    """The registry or config store was closed while a call or watch was in flight."""


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


class EtcdConnection:
    """Channels to an etcd cluster, and the one place where its errors are translated.

    Each endpoint gets at most one channel, made on first use; gRPC reconnects
    a channel by itself. ``failed()`` moves to the next endpoint so a cluster
    member that went away is skipped.
    """

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self.closed = False
        self._clients: dict[int, Any] = {}
        self._current = 0

    @property
    def url(self) -> str:
        return self.settings.url

    def _client_for(self, index: int) -> Any:
        client = self._clients.get(index)
        if client is None:
            host, port = self.settings.endpoints[index]
            client = aetcd.Client(
                host,
                port,
                username=self.settings.username,
                password=self.settings.password,
                timeout=self.settings.timeout,
                options=_CHANNEL_OPTIONS,
                connect_wait_timeout=self.settings.connect_timeout,
            )
            self._clients[index] = client
        return client

    async def client(self) -> Any:
        """The connected ``aetcd.Client`` of the current endpoint."""
        if self.closed:
            raise ConnectionClosed(f"this etcd client for {self.url} is closed; open a new one")
        client = self._client_for(self._current)
        with self.mapped("connecting"):
            await client.connect()
        return client

    def failed(self) -> None:
        """The current endpoint did not answer: use the next one from now on."""
        self._current = (self._current + 1) % len(self.settings.endpoints)

    async def probe(self) -> None:
        """Ask each endpoint in turn for an answer; ``BackendUnreachable`` if none answers.

        Bounded by ``connect_timeout`` per endpoint, so a dead address fails
        quickly instead of hanging.
        """
        problems = []
        for _ in self.settings.endpoints:
            try:
                await self.call(
                    "kvstub",
                    "Range",
                    rpc.RangeRequest(key=self.settings.prefix.encode(), count_only=True),
                    "checking the connection",
                    timeout=self.settings.connect_timeout,
                )
                return
            except BackendUnreachable as exc:
                problems.append(str(exc))
                self.failed()
        raise BackendUnreachable(
            f"cannot reach etcd at {self.url} within {self.settings.connect_timeout:g} s "
            f"per endpoint; is it running (scripts/etcd.sh starts a local one)? "
            f"Details: {'; '.join(problems)}"
        )

    async def call(
        self, stub: str, method: str, request: Any, action: str, *, timeout: float | None = None
    ) -> Any:
        """One unary RPC (``stub`` is an aetcd client attribute such as ``"kvstub"``)."""
        client = await self.client()
        with self.mapped(action):
            return await getattr(getattr(client, stub), method)(
                request,
                timeout=timeout or self.settings.timeout,
                metadata=client.metadata,
            )

    async def keepalive(self, lease_id: int, action: str) -> int:
        """Renew a lease once; return its new TTL (0: etcd does not know it any more)."""
        client = await self.client()
        with self.mapped(action):
            async for reply in client.leasestub.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=self.settings.timeout,
                metadata=client.metadata,
            ):
                return int(reply.TTL)
        return 0

    @contextlib.contextmanager
    def mapped(self, action: str) -> Iterator[None]:
        """Translate aetcd/gRPC failures into qanat's errors, naming the URL and the action."""
        try:
            yield
        except asyncio.CancelledError as exc:
            # Closing a channel cancels its calls: report that as ConnectionClosed,
            # unless our own task is the one being cancelled.
            task = asyncio.current_task()
            if self.closed and task is not None and not task.cancelling():
                raise ConnectionClosed(f"the etcd client for {self.url} was closed") from exc
            raise
        except rpc.AioRpcError as exc:
            if exc.code() in _UNREACHABLE:
                raise BackendUnreachable(
                    f"etcd at {self.url} did not answer while {action}: {exc.details()}"
                ) from exc
            raise BackendError(
                f"etcd at {self.url} refused {action}: {exc.code().name} {exc.details()}"
            ) from exc
        except (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError,
                TimeoutError) as exc:  # fmt: skip
            raise BackendUnreachable(
                f"etcd at {self.url} did not answer while {action}: {exc}"
            ) from exc
        except aetcd.exceptions.ClientError as exc:
            raise BackendError(f"etcd at {self.url} failed while {action}: {exc}") from exc

    async def close(self) -> None:
        """Close every channel; calls in flight end, watches stop. Idempotent."""
        self.closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()


async def watch_batches(
    conn: EtcdConnection, key: bytes, range_end: bytes, start_revision: int, *, prev_kv: bool
) -> AsyncGenerator[list[Any], None]:
    """Watch ``[key, range_end)`` from ``start_revision`` on; yield each response's events.

    Raises ``WatchCompacted`` when etcd cannot replay from ``start_revision``
    (compacted, or the store's revision is now lower: it was wiped or
    restored), ``BackendUnreachable`` when the stream breaks. Ends quietly when
    the connection is closed.
    """
    client = await conn.client()
    create = rpc.WatchCreateRequest(
        key=key, range_end=range_end, start_revision=start_revision, prev_kv=prev_kv
    )

    async def requests() -> AsyncIterator[Any]:
        # A request iterator, not call.write(): a write pending when the
        # channel closes never returns. Keep the request side open.
        yield rpc.WatchRequest(create_request=create)
        await asyncio.Event().wait()

    call = rpc.WatchStub(client.channel).Watch(requests(), metadata=client.metadata)
    try:
        with conn.mapped("watching"):
            async for response in call:
                _check(conn, response, start_revision)
                if response.events:
                    yield list(response.events)
    except ConnectionClosed:
        return
    finally:
        call.cancel()
    raise BackendUnreachable(f"etcd at {conn.url} ended a watch stream")


def _check(conn: EtcdConnection, response: Any, start_revision: int) -> None:
    """Raise if a watch response says the watch cannot deliver what was asked."""
    if response.compact_revision:
        raise WatchCompacted(
            f"etcd at {conn.url} compacted revision {start_revision}; "
            f"oldest available is {response.compact_revision}",
            compact_revision=int(response.compact_revision),
        )
    if response.created and 0 < response.header.revision < start_revision - 1:
        raise WatchCompacted(
            f"etcd at {conn.url} is at revision {response.header.revision}, before "
            f"{start_revision - 1}: the store was reset",
            compact_revision=0,
        )
    if response.canceled:
        raise BackendError(f"etcd at {conn.url} cancelled a watch: {response.cancel_reason}")


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
    "Backoff",
    "ConnectionClosed",
    "EtcdConnection",
    "EtcdSettings",
    "WatchCompacted",
    "parse_etcd_url",
    "watch_batches",
]
