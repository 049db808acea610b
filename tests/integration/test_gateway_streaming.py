"""Large bodies stream through the gateway with back-pressure, never buffered whole."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import pytest
from test_gateway_support import (
    RawClient,
    UpstreamServer,
    get,
    start_gateway,
    static,
)

from qanat.gateway.app import Gateway
from qanat.gateway.body import HIGH_WATER
from qanat.testing import eventually

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
BIG = 48 * MIB  # far more than every buffer on the path (kernel socket buffers included)


@pytest.fixture
async def gateway(upstream: UpstreamServer) -> AsyncIterator[Gateway]:
    gw = await start_gateway([{"name": "all", "upstream": static(upstream), "timeout": "60s"}],
                             max_body_bytes=BIG * 2)
    yield gw
    await gw.aclose(timeout=1.0)


async def test_large_upload_pauses_the_client_instead_of_buffering(
    gateway: Gateway, upstream: UpstreamServer
) -> None:
    """While the upstream does not read, the gateway stops reading the client; the body
    buffered in the gateway stays near its high-water mark and arrives intact."""
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()
    client = await RawClient.connect(gateway.port)

    async def send_body() -> None:
        await client.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % BIG)
        for _ in range(BIG // len(block)):
            digest.update(block)
            client.writer.write(block)
            await client.writer.drain()

    sender = asyncio.create_task(send_body())
    await asyncio.wait_for(upstream.read_paused.wait(), 30)  # the upstream stopped reading
    await eventually(lambda: gateway.stats().body_pauses >= 1, timeout=30,
                     what=lambda: f"a body pause: {gateway.stats()}")
    assert not sender.done()  # the client is blocked: nobody holds the rest of the body
    upstream.gate.set()  # now let the upstream consume everything
    await asyncio.wait_for(sender, 60)
    reply = await client.response(timeout=60)
    assert reply.status == 200
    assert reply.json()["body"] == {"length": BIG, "sha256": digest.hexdigest()}
    assert gateway.stats().body_peak_bytes <= HIGH_WATER + MIB  # high water + one socket read
    await client.close()


async def test_large_download_pauses_the_upstream_instead_of_buffering(
    gateway: Gateway, upstream: UpstreamServer
) -> None:
    """A client that does not read makes the upstream's socket fill (pause_writing) long
    before the body is done; the client then receives every byte."""
    client = await RawClient.connect(gateway.port)
    client.writer.transport.pause_reading()  # a slow reader: take nothing for now
    await client.send(get(f"/big/{BIG}"))
    await asyncio.wait_for(upstream.write_paused.wait(), 30)
    assert 0 < upstream.written_before_pause < BIG // 2
    client.writer.transport.resume_reading()
    reply = await client.response(timeout=60)
    assert reply.status == 200
    expected = hashlib.sha256((bytes(range(256)) * 256) * (BIG // 65536)).hexdigest()
    assert len(reply.body) == BIG and hashlib.sha256(reply.body).hexdigest() == expected
    await client.close()


async def test_chunked_upload_over_limit_is_cut_at_the_limit(upstream: UpstreamServer) -> None:
    """A chunked body is counted while streaming; past max_body_bytes the answer is 413."""
    upstream.gate.set()
    gw = await start_gateway([{"name": "all", "upstream": static(upstream)}],
                             max_body_bytes=MIB)
    try:
        client = await RawClient.connect(gw.port)
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"q" * 64 * 1024)
        await client.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(64):  # 4 MiB: the gateway keeps reading (and dropping) while it closes
                await client.send(chunk)
        reply = await client.response(timeout=30)
        assert reply.status == 413
        assert reply.headers[b"connection"] == b"close"
        assert all(s.body_length <= MIB for s in upstream.seen)
        await client.close()
    finally:
        await gw.aclose(timeout=1.0)
