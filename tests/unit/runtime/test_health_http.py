"""The HTTP health probe against real local servers: status, bounded body output, stalls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from tests.servers import StreamServer
from tests.unit.runtime.health_support import until_health

from qanat.backends.memory import MemoryRegistry
from qanat.core.health import MAX_OUTPUT
from qanat.ports import Health, Instance
from qanat.runtime.health import CheckSettings, HealthChecker
from qanat.runtime.health_http import parse_status_line, probe_http

P, W, C = Health.PASSING, Health.WARNING, Health.CRITICAL
Mode = str | bytes | tuple[bytes, str]


@contextlib.asynccontextmanager
async def server(mode: list[Mode]) -> AsyncIterator[int]:
    """A local HTTP server answering per ``mode[0]``.

    A status code ("200", "500", "429") is an empty answer with that status;
    "hang" never answers; bytes are written as they are, then the connection
    closes; ``(bytes, "stall")`` writes the bytes and then sends nothing more;
    ``(bytes, "endless")`` writes the bytes, then body data until the client leaves.
    """
    stop = asyncio.Event()  # never set: "hang" and "stall" wait until the server closes

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        answer = mode[0]
        with contextlib.suppress(ConnectionError):
            if answer == "hang":
                await stop.wait()
            elif isinstance(answer, bytes):
                writer.write(answer)
            elif isinstance(answer, tuple):
                writer.write(answer[0])
                await writer.drain()
                while answer[1] == "endless" and not writer.is_closing():
                    writer.write(b"y" * 1024)
                    await writer.drain()  # back-pressure paces the loop
                await stop.wait()
            else:
                writer.write(f"HTTP/1.1 {answer} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        writer.close()

    async with StreamServer(handle) as srv:  # closing it cancels the handlers still waiting
        yield srv.port


async def probe(answer: Mode, timeout: float = 2.0) -> tuple[Health, str]:
    """Probe a server that gives ``answer`` once."""
    async with server([answer]) as port:
        return await probe_http(f"http://127.0.0.1:{port}/health", timeout)


def test_parse_status_line_reads_code_and_reason() -> None:
    """A well-formed HTTP/1.x status line gives its code and reason phrase."""
    line = b"HTTP/1.1 503 Service Unavailable\r\n"
    assert parse_status_line(line) == (503, "Service Unavailable")
    assert parse_status_line(b"HTTP/1.0 200\r\n") == (200, "")


@pytest.mark.parametrize("line", [b"garbage\r\n", b"HTTP/2 200 OK\r\n", b"HTTP/1.1 2x0 OK\r\n"])
def test_parse_status_line_rejects_malformed(line: bytes) -> None:
    """A status line that is not HTTP/1.x with a three-digit code is a ValueError."""
    with pytest.raises(ValueError, match="malformed status line"):
        parse_status_line(line)


async def test_probe_http_against_real_server() -> None:
    """A real server's 200, 429, 500 and silence are passing, warning, critical, critical."""
    mode = ["200"]
    async with server(mode) as port:
        url = f"http://127.0.0.1:{port}/health"
        seen = []
        for m in ("200", "429", "500", "hang"):
            mode[0] = m
            seen.append(await probe_http(url, 0.3))
    assert [h for h, _ in seen] == [P, W, C, C]
    assert "200" in seen[0][1]
    assert "timed out" in seen[3][1]


async def test_probe_http_connection_refused_is_critical() -> None:
    """Nobody listening on the port is a critical result naming the error."""
    async with server(["200"]) as port:
        pass  # the port is now closed
    health, output = await probe_http(f"http://127.0.0.1:{port}/", 1.0)
    assert health is C
    assert "Error" in output


async def test_body_is_the_output_as_consul_formats_it() -> None:
    """The body (Content-Length) follows the status in Consul's "... Output: body" form."""
    body = b'{"db": "ok"}'
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    health, output = await probe(head + body)
    assert health is P
    assert output.endswith(': 200 OK Output: {"db": "ok"}')


async def test_chunked_body_is_decoded() -> None:
    """A chunked body is decoded into the output."""
    answer = (b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\ndisk \r\n4;ext=1\r\nfull\r\n0\r\n\r\n")  # fmt: skip
    health, output = await probe(answer)
    assert health is C
    assert output.endswith("503 Service Unavailable Output: disk full")


async def test_body_until_close_is_read_without_a_length() -> None:
    """Without Content-Length or chunking the body runs until the server closes."""
    health, output = await probe(b"HTTP/1.1 429 Slow Down\r\n\r\nshedding load")
    assert health is W
    assert output.endswith("Output: shedding load")


async def test_endless_body_is_cut_to_the_output_limit_before_the_timeout() -> None:
    """An endless body yields the status and at most MAX_OUTPUT of output, well within time."""
    head = b"HTTP/1.1 200 OK\r\n\r\n"
    loop = asyncio.get_running_loop()
    started = loop.time()
    health, output = await probe((head, "endless"), timeout=30)
    assert health is P
    assert len(output) <= MAX_OUTPUT and output.count("y") > MAX_OUTPUT // 2
    assert loop.time() - started < 30  # it stopped reading; the deadline did not end it


async def test_stalled_body_keeps_the_status_and_what_arrived() -> None:
    """A body that stops mid-way: the answered status stands, with the part read."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    health, output = await probe((head, "stall"), timeout=0.3)
    assert health is P
    assert output.endswith("200 OK Output: partial")


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
     b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
     b"SSH-2.0-OpenSSH\r\n"],
)  # fmt: skip
async def test_malformed_answers_are_critical(answer: bytes) -> None:
    """A malformed header, too many headers or a non-HTTP answer is critical, naming why."""
    health, output = await probe(answer)
    assert health is C
    assert "ValueError" in output


async def test_bad_url_is_critical() -> None:
    """A URL that is not http(s) is a critical result, not an exception."""
    health, output = await probe_http("ftp://example.invalid/x", 1.0)
    assert health is C and "not an http(s) URL" in output


class Recording(MemoryRegistry):
    """The real memory registry, signalling each set_health so a test can wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Condition()

    async def set_health(
        self, service: str, instance_id: str, health: Health, output: str = ""
    ) -> None:
        await super().set_health(service, instance_id, health, output)
        async with self.wrote:
            self.wrote.notify_all()


async def test_checker_writes_the_body_to_the_registry() -> None:
    """The probe's output, body included, is what the checker hands to set_health."""
    body = b"db: ok"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    registry = Recording()
    async with server([head + body]) as port:
        inst = Instance("a1", "api", "127.0.0.1", port)
        await registry.register(inst)
        async with HealthChecker(registry, settings=CheckSettings(interval=0.02)) as checker:
            checker.add_http(inst)

            async def recorded() -> str:
                return (await registry.outputs("api")).get("a1", "")

            async with asyncio.timeout(5), registry.wrote:
                while "Output: db: ok" not in await recorded():
                    await registry.wrote.wait()
    await registry.close()


def _instance(port: int) -> Instance:
    return Instance(id="a1", service="api", address="127.0.0.1", port=port)


async def test_checker_follows_real_server_200_500_silent() -> None:
    """A started checker tracks a real server through 200, 500 and silence into the registry."""
    mode = ["200"]
    registry = MemoryRegistry()
    async with server(mode) as port:
        inst = _instance(port)
        await registry.register(inst)
        settings = CheckSettings(interval=0.02, timeout=0.2)
        async with HealthChecker(registry, settings=settings) as checker:
            checker.add_http(inst, path="/health")
            await until_health(registry, "a1", P)
            mode[0] = "500"
            await until_health(registry, "a1", C)
            mode[0] = "200"
            await until_health(registry, "a1", P)
            mode[0] = "hang"
            await until_health(registry, "a1", C)
            assert "timed out" in checker.report()[0].output
    await registry.close()
