"""The etcd backend under faults: restarts, wiped data, lost leases, compaction, dead servers.

Each test that breaks etcd uses a private server (``private_etcd``) so the
shared one stays untouched. Nothing sleeps a fixed time: every wait is on a
condition (a watch's snapshots, a task's end) with a deadline.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import aetcd
import pytest
from aetcd import rpc
from grpc.aio import Metadata
from tests.contract.helpers import DEADLINE, Collector
from tests.contract.registry_contract import ids, inst
from tests.integration.conftest import PrivateEtcd, unique_prefix
from tests.servers import StreamServer, relay

from qanat.backends._etcd import EtcdConnection
from qanat.backends.etcd import EtcdConfigStore, EtcdRegistry, WatchCompacted, parse_etcd_url
from qanat.errors import BackendError, BackendUnreachable, ConfigError
from qanat.ports import Health, Instance
from qanat.testing import eventually, free_port

pytestmark = pytest.mark.integration

TTL = 2.0  # the shortest lease etcd grants with default election settings


async def raw_client(endpoint: str) -> aetcd.Client:
    """A plain aetcd client, to do to etcd what an operator or another tool would."""
    host, port = endpoint.rsplit(":", 1)
    client = aetcd.Client(host, int(port), timeout=5)
    await client.connect()
    return client


async def bump_revision(url: str, writes: int) -> None:
    """Make ``writes`` writes so the store revision is well above what a wiped store reaches."""
    store = await EtcdConfigStore.open(url)
    try:
        for n in range(writes):
            await store.set(f"filler/{n}", str(n))
    finally:
        await store.close()


class Gate:
    """A TCP front for an etcd: forwards connections, or resets them as a dead server would.

    ``refuse()`` cuts the forwarded connections and resets every new one
    (counted in ``refused``); ``forward()`` lets connections through again. To a
    client this is etcd killed and restarted on the same address.
    """

    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.rsplit(":", 1)
        self.target = (host, int(port))
        self.forwarding = True
        self.refused = 0
        self._links: set[asyncio.StreamWriter] = set()
        self.server = StreamServer(self._serve)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def refuse(self) -> None:
        self.forwarding = False
        for writer in list(self._links):
            writer.transport.abort()

    def forward(self) -> None:
        self.forwarding = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.forwarding:
            self.refused += 1
            linger = struct.pack("ii", 1, 0)  # close with a reset, as a closed port answers
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._links |= {writer, up_writer}
        try:
            await relay(reader, writer, up_reader, up_writer)
        finally:
            self._links -= {writer, up_writer}

    async def __aenter__(self) -> Gate:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.refuse()
        await self.server.aclose()


@pytest.fixture
async def registries() -> AsyncIterator[list[EtcdRegistry]]:
    """A list the test appends its registries to; all are closed at teardown."""
    opened: list[EtcdRegistry] = []
    yield opened
    for registry in opened:
        await registry.close(deregister=False)


# -- keepalive across outages ------------------------------------------------


async def test_keepalive_re_registers_after_etcd_returns_with_wiped_data(
    private_etcd: PrivateEtcd, registries: list[EtcdRegistry]
) -> None:
    """After etcd restarts empty, the owner puts its instance back and an old watcher sees it."""
    url = private_etcd.url()
    owner = await EtcdRegistry.open(url)
    observer = await EtcdRegistry.open(url)
    registries += [owner, observer]
    await owner.register(inst("a"), ttl=TTL)
    await bump_revision(url, 30)
    watch = Collector(observer.watch("orders"))
    try:
        await watch.wait_for(lambda s: len(s) >= 1 and ids(s[-1]) == ["a"])
        private_etcd.stop()
        await private_etcd.start(fresh=True)
        late = await EtcdRegistry.open(url)
        registries.append(late)
        await late.register(inst("b"), ttl=30)
        # The watcher must notice the wiped store (its revision went backwards),
        # re-list, and so see both the re-registered "a" and the new "b".
        await watch.wait_for(lambda s: ids(s[-1]) == ["a", "b"], timeout=3 * DEADLINE)
        assert ids(await late.discover("orders")) == ["a", "b"]
    finally:
        await watch.close()


async def test_a_registry_opened_right_after_an_outage_answers_at_once(
    private_etcd: PrivateEtcd, registries: list[EtcdRegistry]
) -> None:
    """Opening a registry on an etcd that just came back works, whatever older clients saw.

    Regression: gRPC shares one subchannel per address among a process's
    channels, so a new registry inherited the reconnect backoff of one that had
    seen etcd down, and ``open`` failed with "Connection refused" on an etcd
    that was up again (the flake of the wiped-data test above).
    """
    async with Gate(private_etcd.endpoint) as gate:
        url = f"etcd://{gate.endpoint}?prefix={unique_prefix()}"
        first = await EtcdRegistry.open(url)
        registries.append(first)
        await first.register(inst("a"), ttl=30)
        watch = Collector(first.watch("orders"))
        try:
            await watch.wait_for(lambda s: len(s) >= 1 and ids(s[-1]) == ["a"])
            gate.refuse()
            # The watch keeps reconnecting; gRPC's backoff grows with each refusal,
            # and after six it waits about a second before trying again.
            await eventually(
                lambda: gate.refused >= 6,
                timeout=DEADLINE,
                what=lambda: f"six refused reconnects (saw {gate.refused}; watch: {watch.error!r})",
            )
            gate.forward()
            late = await EtcdRegistry.open(url)
            registries.append(late)
            await late.register(inst("b"), ttl=30)
            assert ids(await late.discover("orders")) == ["a", "b"]
            # and the registry that saw the outage rides it out on its own
            await watch.wait_for(lambda s: ids(s[-1]) == ["a", "b"])
        finally:
            await watch.close()


async def test_keepalive_rides_out_a_restart_with_the_same_data(
    private_etcd: PrivateEtcd, registries: list[EtcdRegistry]
) -> None:
    """Across a kill and restart (data kept), the instance stays and keeps being renewed."""
    url = private_etcd.url()
    owner = await EtcdRegistry.open(url)
    registries.append(owner)
    await owner.register(inst("a"), ttl=TTL)
    private_etcd.stop()
    await private_etcd.start()
    observer = await EtcdRegistry.open(url)
    registries.append(observer)
    watch = Collector(observer.watch("orders"))
    try:
        await watch.wait_for(lambda s: len(s) >= 1)
        # etcd extends restored leases by one TTL when it elects a leader; only a
        # keepalive that resumed keeps the instance beyond that.
        await watch.stays(lambda s: all(ids(x) == ["a"] for x in s), seconds=3 * TTL)
        assert ids(await observer.discover("orders")) == ["a"]
    finally:
        await watch.close()


async def test_lost_lease_is_re_granted_with_the_latest_health(
    shared_etcd_url: str, registries: list[EtcdRegistry]
) -> None:
    """When the lease vanishes (revoked, as if expired) the owner re-registers, health kept."""
    owner = await EtcdRegistry.open(shared_etcd_url)
    registries.append(owner)
    await owner.register(inst("a"), ttl=TTL)
    await owner.set_health("orders", "a", Health.WARNING)
    watch = Collector(owner.watch("orders"))
    settings = parse_etcd_url(shared_etcd_url)
    key = f"{settings.prefix}/registry/orders/a".encode()
    client = await raw_client("{}:{}".format(*settings.endpoints[0]))
    try:
        await watch.wait_for(lambda s: len(s) >= 1)
        kv = await client.get(key)
        assert kv is not None and kv.lease != 0, "the instance is attached to a lease"
        await client.revoke_lease(kv.lease)
        await watch.wait_for(lambda s: [] in s and len(s[-1]) == 1)
        [back] = watch.items[-1]
        assert (back.id, back.health) == ("a", Health.WARNING)
        again = await client.get(key)
        assert again is not None and again.lease not in (0, kv.lease)
    finally:
        await watch.close()
        await client.close()


# -- watches across restarts and compaction ---------------------------------------


async def test_watch_keeps_working_across_an_etcd_restart(
    private_etcd: PrivateEtcd, registries: list[EtcdRegistry]
) -> None:
    """A watcher started before etcd was killed reports changes made after it came back."""
    url = private_etcd.url()
    owner = await EtcdRegistry.open(url)
    observer = await EtcdRegistry.open(url)
    registries += [owner, observer]
    await owner.register(inst("a"), ttl=30)
    watch = Collector(observer.watch("orders"))
    try:
        await watch.wait_for(lambda s: len(s) >= 1 and ids(s[-1]) == ["a"])
        private_etcd.stop()
        await private_etcd.start()
        late = await EtcdRegistry.open(url)
        registries.append(late)
        await late.register(inst("b"), ttl=30)
        await late.set_health("orders", "a", Health.CRITICAL)
        await watch.wait_for(
            lambda s: (
                [(i.id, i.health) for i in s[-1]] == [("a", Health.CRITICAL), ("b", Health.PASSING)]
            ),
            timeout=3 * DEADLINE,
        )
        assert all("a" in ids(s) for s in watch.items), "a survived the restart"
    finally:
        await watch.close()


async def test_compacted_registry_watch_re_lists_the_latest_state(
    private_etcd: PrivateEtcd, registries: list[EtcdRegistry]
) -> None:
    """A watch resuming from a compacted revision re-lists and yields the latest state at once."""
    registry = await EtcdRegistry.open(private_etcd.url())
    registries.append(registry)
    await registry.register(inst("a"), ttl=30)
    watch = registry.watch("orders")
    try:
        assert ids(await anext(watch)) == ["a"]  # listed; the stream opens on the next step
        await registry.register(inst("b"), ttl=30)
        await registry.register(inst("c"), ttl=30)
        await registry.set_enabled("orders", "a", False)
        await registry.deregister("orders", "c")
        client = await raw_client(private_etcd.endpoint)
        try:
            head = await client.get_prefix(b"/")
            await client.compact(head.header.revision, physical=True)
        finally:
            await client.close()
        latest = await asyncio.wait_for(anext(watch), DEADLINE)
        # Resuming without a re-list would first yield the intermediate [a, b].
        assert latest == await registry.discover("orders", healthy_only=False)
        assert [(i.id, i.enabled) for i in latest] == [("a", False), ("b", True)]
    finally:
        await watch.aclose()


async def test_config_watch_from_a_compacted_revision_says_so(private_etcd: PrivateEtcd) -> None:
    """A config watch asked to replay from a compacted revision raises WatchCompacted clearly."""
    store = await EtcdConfigStore.open(private_etcd.url())
    try:
        old = await store.set("k", "1")
        latest = await store.set("k", "2")
        client = await raw_client(private_etcd.endpoint)
        try:
            await client.compact(latest, physical=True)
        finally:
            await client.close()
        watch = store.watch("k", start_revision=old)
        with pytest.raises(WatchCompacted, match="compacted") as caught:
            await asyncio.wait_for(anext(watch), DEADLINE)
        assert caught.value.compact_revision == latest
        # History records are separate keys, so they survive compaction.
        assert [c.new_value for c in await store.history("k")] == ["2", "1"]
    finally:
        await store.close()


async def test_config_watch_resumes_after_restart_without_gaps(
    private_etcd: PrivateEtcd,
) -> None:
    """Changes made while etcd was down-and-back reach a config watch, each exactly once."""
    url = private_etcd.url()
    store = await EtcdConfigStore.open(url)
    watch = Collector(
        store.watch("app/", prefix=True, start_revision=await store.set("app/a", "1"))
    )
    try:
        await watch.wait_for(lambda c: len(c) >= 1)
        private_etcd.stop()
        await private_etcd.start()
        writer = await EtcdConfigStore.open(url)
        try:
            await writer.set("app/a", "2")
            await writer.set("app/b", "x")
        finally:
            await writer.close()
        await watch.wait_for(lambda c: len(c) >= 3, timeout=3 * DEADLINE)
        assert [(c.key, c.old_value, c.new_value) for c in watch.items] == [
            ("app/a", None, "1"),
            ("app/a", "1", "2"),
            ("app/b", None, "x"),
        ]
    finally:
        await watch.close()
        await store.close()


# -- unreachable servers -------------------------------------------------------


def test_a_message_grpc_could_not_send_counts_as_unreachable() -> None:
    """A stream write that grpc.aio's core could not send (the connection broke under it) is
    etcd not answering, which watches retry; an INTERNAL answer from etcd stays a refusal."""
    conn = EtcdConnection(parse_etcd_url("etcd://127.0.0.1:2379"))
    lost = rpc.AioRpcError(
        rpc.StatusCode.INTERNAL,
        Metadata(),
        Metadata(),
        details="Internal error from Core",
        debug_error_string='Failed "execute_batch": (SendMessageOperation,)',
    )
    with (
        pytest.raises(BackendUnreachable, match="did not answer while watching"),
        conn.mapped("watching"),
    ):
        raise lost
    answered = rpc.AioRpcError(
        rpc.StatusCode.INTERNAL, Metadata(), Metadata(), details="etcdserver: corrupt cluster"
    )
    with pytest.raises(BackendError, match="refused watching") as caught, conn.mapped("watching"):
        raise answered
    assert not isinstance(caught.value, BackendUnreachable)


async def test_open_on_a_dead_port_fails_fast_with_the_url() -> None:
    """Opening a URL where nothing listens raises BackendUnreachable naming the URL."""
    url = f"etcd://127.0.0.1:{free_port()}?connect_timeout=1"
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(BackendUnreachable, match=r"127\.0\.0\.1") as caught:
            await EtcdRegistry.open(url)
        assert "scripts/etcd.sh" in str(caught.value)
        with pytest.raises(BackendUnreachable):
            await EtcdConfigStore.open(url)


async def test_open_on_a_silent_server_is_bounded_by_connect_timeout() -> None:
    """A server that accepts TCP but never answers gives BackendUnreachable, not a hang."""
    connections: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        connections.append(w)
        await reader.read()  # until the client gives up

    async with StreamServer(accept_and_say_nothing) as server:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(BackendUnreachable, match=str(server.port)):
                await EtcdRegistry.open(f"etcd://127.0.0.1:{server.port}?connect_timeout=1")
        assert connections, "the client did connect; the server just never answered"


async def test_calls_while_etcd_is_down_raise_backend_unreachable(
    private_etcd: PrivateEtcd, registries: list[EtcdRegistry]
) -> None:
    """With etcd gone, reads, writes and a new watch raise BackendUnreachable instead of hanging."""
    url = private_etcd.url(timeout=1)
    registry = await EtcdRegistry.open(url)
    registries.append(registry)
    store = await EtcdConfigStore.open(url)
    try:
        private_etcd.stop()
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(BackendUnreachable, match=private_etcd.endpoint):
                await registry.discover("orders")
            with pytest.raises(BackendUnreachable):
                await registry.register(inst("a"), ttl=TTL)
            with pytest.raises(BackendUnreachable):
                await store.set("k", "v")
            with pytest.raises(BackendUnreachable):
                await anext(registry.watch("orders"))
    finally:
        await store.close()


async def test_a_dead_endpoint_in_the_list_is_skipped(
    private_etcd: PrivateEtcd, registries: list[EtcdRegistry]
) -> None:
    """With several endpoints, open and calls go to one that answers."""
    url = f"etcd://127.0.0.1:{free_port()},{private_etcd.endpoint}?connect_timeout=1"
    registry = await EtcdRegistry.open(url)
    registries.append(registry)
    await registry.register(inst("a"), ttl=30)
    assert ids(await registry.discover("orders")) == ["a"]


async def test_close_ends_watches(shared_etcd_url: str) -> None:
    """Closing a registry or config store ends the watches it handed out."""
    registry = await EtcdRegistry.open(shared_etcd_url)
    store = await EtcdConfigStore.open(shared_etcd_url)
    watch = registry.watch("orders")
    assert await anext(watch) == []
    pending = asyncio.ensure_future(anext(watch))
    changes = store.watch("k")
    pending_change = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)  # let both reach their stream reads
    await registry.close()
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, DEADLINE)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending_change, DEADLINE)


# -- bad configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("etcd://127.0.0.1:2379/ns", "prefix"),
        ("etcd://127.0.0.1:notaport", "endpoint"),
        ("etcd://127.0.0.1:2379?prefix=relative", "prefix must start with '/'"),
        ("etcd://127.0.0.1:2379?timeout=-1", "timeout"),
        ("etcd://127.0.0.1:2379?colour=blue", "unknown option 'colour'"),
        ("http://127.0.0.1:2379", "etcd://"),
    ],
)
async def test_bad_url_is_a_config_error(url: str, says: str) -> None:
    """A malformed etcd URL is refused with a ConfigError saying what to fix."""
    with pytest.raises(ConfigError, match=says):
        await EtcdRegistry.open(url)


def test_url_options_and_masked_password() -> None:
    """Endpoints, options and credentials are parsed; the password never shows in messages."""
    settings = parse_etcd_url(
        "etcd://root:s3cret@10.0.0.1,[::1]:2380?prefix=/shop/&timeout=2&connect_timeout=0.5"
    )
    assert settings.endpoints == (("10.0.0.1", 2379), ("::1", 2380))
    assert (settings.prefix, settings.timeout, settings.connect_timeout) == ("/shop", 2.0, 0.5)
    assert (settings.username, settings.password) == ("root", "s3cret")
    assert "s3cret" not in settings.url and "root:***@" in settings.url


def test_instance_json_is_what_etcd_holds() -> None:
    """The instance layout in etcd round-trips every field (a guard for the key layout docs)."""
    from qanat.backends._common import instance_from_json, instance_to_json

    original = Instance("i", "s", "::1", 1, ("t",), {"k": "v"}, 2, "1", "z", Health.WARNING, False)
    assert instance_from_json(instance_to_json(original)) == original
