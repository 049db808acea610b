"""The Redis-backed rate limit holds across two ``python -m qanat.gateway`` processes.

Both gateways serve the same route file, whose ``rate_limit`` filter keeps one
GCRA in the real Redis on 127.0.0.1:6379 under a prefix unique to this run.
Clients hammer both processes at once; the total admitted may never exceed
what one global limit allows in the time it ran: ``burst + rate * elapsed``.
If Redis cannot be reached the test fails under CI (``CI`` set) and is
skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gateway_support import RawClient, get
from test_gateway_traffic_support import Backend

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.integration
REDIS_URL = "redis://127.0.0.1:6379/0"
RATE, BURST = 5.0, 10
STARTUP = 30.0


@pytest.fixture(scope="module")
def redis_url() -> str:
    """The shared Redis; fail under CI, skip elsewhere, when it does not answer PING."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required under CI: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other run uses; its keys are deleted afterwards."""
    p = f"qanat-gw-test-{uuid.uuid4().hex[:12]}"
    yield p
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{p}*"):
        client.delete(key)
    client.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Backend]:
    b = await Backend("u").start()
    yield b
    await b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + STARTUP
    while True:
        try:
            client = await RawClient.connect(port)
        except OSError:
            if proc.returncode is not None or time.monotonic() > deadline:
                tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
                raise AssertionError(f"gateway on {port} did not start: {tail}") from None
            await asyncio.sleep(0.05)  # polling the real condition: is the port open yet
        else:
            await client.close()
            return


async def _hammer(port: int, stop: float) -> list[int]:
    client = await RawClient.connect(port)
    statuses = []
    try:
        while time.monotonic() < stop:
            reply = await client.request(get("/api/x"))
            statuses.append(reply.status)
            if reply.status == 429:
                assert b"retry-after" in reply.headers and b"ratelimit" in reply.headers
    finally:
        await client.close()
    return statuses


async def test_two_gateway_processes_share_one_redis_limit(
    redis_url: str, prefix: str, upstream: Backend, tmp_path: Path
) -> None:
    """Two gateway processes on one Redis admit at most burst + rate x elapsed in total."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        "routes:\n"
        "  - name: api\n"
        "    match: {prefix: /api}\n"
        f"    upstream: {{kind: static, targets: [{{url: '{upstream.url}'}}]}}\n"
        "    filters:\n"
        "      - name: rate_limit\n"
        f"        config: {{rate: {RATE}, burst: {BURST}, key: route,\n"
        f"                 redis: {{url: '{redis_url}', prefix: '{prefix}', timeout: 2s}}}}\n"
    )
    ports = [_free_port(), _free_port()]
    logs = [tmp_path / f"gw-{p}.log" for p in ports]
    procs = []
    for port, log in zip(ports, logs, strict=True):
        with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the gateway
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "qanat.gateway", "--config", str(config),
                "--port", str(port), stdout=out, stderr=out))
    try:
        for port, proc, log in zip(ports, procs, logs, strict=True):
            await _listening(port, proc, log)
        started = time.monotonic()
        results = await asyncio.gather(*[_hammer(p, started + 1.5) for p in ports * 3])
        elapsed = time.monotonic() - started
        per_gateway = [sum(r.count(200) for r in results[i::2]) for i in range(2)]
        admitted = sum(per_gateway)
        sent = sum(len(r) for r in results)
        assert set().union(*map(set, results)) <= {200, 429}
        assert admitted <= BURST + RATE * elapsed, (admitted, elapsed, per_gateway, sent)
        assert admitted >= BURST and min(per_gateway) > 0  # both processes served some
        assert sent > 2 * (BURST + RATE * elapsed)  # enough pressure for two limits to show
        assert upstream.count() == admitted
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
