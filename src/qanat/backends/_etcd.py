"""etcd plumbing shared by ``EtcdRegistry`` and ``EtcdConfigStore`` (pure helpers: ``_etcd_util``).

- ``EtcdConnection``: one gRPC channel per endpoint (made by ``aetcd``), the
  current endpoint, and the error boundary: every gRPC/aetcd failure leaves as
  ``BackendUnreachable`` (etcd did not answer) or ``BackendError`` (it answered
  no), with the URL in the message.
- ``watch_batches``: one etcd watch stream, yielding each response's events
  together (one transaction's changes arrive together) and raising
  ``WatchCompacted`` when etcd can no longer replay from the asked revision.

The raw etcd v3 gRPC API is used (``aetcd.rpc`` stubs) rather than aetcd's
wrappers: it exposes reads at a revision, transactions with both branches and
their header revision, and per-stream watches with ``compact_revision``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import aetcd
from aetcd import rpc

from qanat.backends._etcd_util import EtcdSettings, parse_etcd_url
from qanat.errors import BackendError, BackendUnreachable, WatchCompacted

_UNREACHABLE = {rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED}
# How grpc.aio reports a message its core could not send (the connection broke
# under a stream's write, e.g. a watch's create request as etcd went away):
# INTERNAL with these details. etcd never saw the request: it did not answer.
_SEND_FAILED = (rpc.StatusCode.INTERNAL, "Internal error from Core")
# Short reconnect backoff in the channel itself: gRPC's default grows to 120 s,
# far longer than a lease TTL, so a restarted etcd would be noticed too late.
_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,  # etcd accepts pings every >= 5 s by default
    "grpc.keepalive_timeout_ms": 5_000,
    # gRPC otherwise shares one subchannel (connection and reconnect backoff) per
    # address among every channel of the process: a registry opened just after
    # an outage inherited the backoff of one that had seen etcd down, and its
    # first call failed with "Connection refused" on an etcd that was up again.
    "grpc.use_local_subchannel_pool": 1,
}


class ConnectionClosed(BackendError):
    """The registry or config store was closed while a call or watch was in flight."""


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

    @property
    def current(self) -> int:
        """Index of the endpoint calls go to now (pass it to ``failed``)."""
        return self._current

    def failed(self, index: int) -> None:
        """Endpoint ``index`` did not answer: move to the next one, unless another caller did."""
        if index == self._current:
            self._current = (index + 1) % len(self.settings.endpoints)

    async def probe(self) -> None:
        """Ask each endpoint in turn for an answer; ``BackendUnreachable`` if none answers.

        Bounded by ``connect_timeout`` per endpoint, so a dead address fails
        quickly instead of hanging.
        """
        problems = []
        for _ in self.settings.endpoints:
            index = self._current
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
                self.failed(index)
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
            if exc.code() in _UNREACHABLE or (exc.code(), exc.details()) == _SEND_FAILED:
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


__all__ = ["ConnectionClosed", "EtcdConnection", "WatchCompacted", "watch_batches"]


async def connect(url: str) -> EtcdConnection:
    """A connection to ``etcd://host:port[,host:port...][?prefix=/ns]``, probed once.

    Raises ``BackendUnreachable`` (and closes what it opened) when etcd does not answer.
    """
    conn = EtcdConnection(parse_etcd_url(url))
    try:
        await conn.probe()
    except BaseException:
        await conn.close()
        raise
    return conn
