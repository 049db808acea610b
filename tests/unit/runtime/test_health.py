"""Health checks: Consul's transitions (pure, FakeClock), TTL checks, HTTP probes, the checker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.backends.memory import MemoryRegistry
from qanat.errors import ConfigError
from qanat.ports import Health, Instance
from qanat.runtime.health import (
    CheckSettings,
    CheckState,
    HealthChecker,
    TtlCheck,
    classify_status,
    parse_status_line,
    probe_http,
)
from qanat.testing import FakeClock

P, W, C = Health.PASSING, Health.WARNING, Health.CRITICAL


async def until_health(
    registry: MemoryRegistry, iid: str, health: Health | None, timeout: float = 5.0
) -> None:
    """Wait, on the registry's own watch and under a deadline, until ``iid`` has ``health``.

    ``None`` waits until the instance is gone.
    """
    async with asyncio.timeout(timeout), contextlib.aclosing(registry.watch("api")) as snaps:
        async for snapshot in snaps:
            found = {i.id: i.health for i in snapshot}
            if found.get(iid) is health:
                return


# --- pure: classification and transitions ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [(200, P), (204, P), (299, P), (429, W), (300, C), (404, C), (500, C), (503, C), (199, C)],
)
def test_classify_status_follows_consul(code: int, expected: Health) -> None:
    """2xx is passing, 429 is warning, every other status is critical."""
    assert classify_status(code) is expected


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


def test_new_check_starts_critical_and_first_pass_flips_it() -> None:
    """With Consul's defaults a check starts critical and one success makes it passing."""
    clock = FakeClock()
    state = CheckState(CheckSettings(), clock())
    assert state.status is C
    assert state.record(P, "ok", clock()) is P
    assert state.critical_for(clock()) == 0.0


def test_success_before_passing_needs_consecutive_successes() -> None:
    """success_before_passing=3 flips to passing only on the third success in a row."""
    clock = FakeClock()
    state = CheckState(CheckSettings(success_before_passing=3), clock())
    assert [state.record(r, "", clock()) for r in (P, P, C, P, P)] == [C, C, C, C, C]
    assert state.record(P, "", clock()) is P


def test_failures_before_critical_and_warning() -> None:
    """Failures first turn the check warning, then critical, at their thresholds."""
    clock = FakeClock()
    settings = CheckSettings(initial=P, failures_before_warning=1, failures_before_critical=3)
    state = CheckState(settings, clock())
    assert [state.record(C, "boom", clock()) for _ in range(3)] == [W, W, C]
    assert state.output == "boom"


def test_a_success_resets_the_failure_count() -> None:
    """A success between failures restarts the count towards critical."""
    clock = FakeClock()
    state = CheckState(CheckSettings(initial=P, failures_before_critical=2), clock())
    assert [state.record(r, "", clock()) for r in (C, P, C, P, C, C)] == [P, P, P, P, P, C]


def test_deregister_only_after_critical_for_longer_than_limit() -> None:
    """The deregister clock starts when the check turns critical and resets when it recovers."""
    clock = FakeClock()
    state = CheckState(CheckSettings(initial=P, deregister_critical_after=60), clock())
    state.record(C, "down", clock())
    clock.advance(60)
    assert not state.should_deregister(clock())
    state.record(P, "up", clock.advance(0.5))
    state.record(C, "down", clock())
    clock.advance(59.9)
    assert not state.should_deregister(clock())
    clock.advance(0.2)
    assert state.should_deregister(clock())
    assert state.critical_for(clock()) == pytest.approx(60.1)


def test_without_deregister_setting_never_deregisters() -> None:
    """A check with no deregister_critical_after stays registered however long it fails."""
    clock = FakeClock()
    state = CheckState(CheckSettings(), clock())
    state.record(C, "", clock.advance(10**6))
    assert not state.should_deregister(clock.advance(10**6))


@given(st.lists(st.sampled_from([P, W, C]), max_size=40), st.integers(0, 4), st.integers(0, 4))
def test_status_always_reflects_a_streak_long_enough(
    results: list[Health], need_ok: int, need_fail: int
) -> None:
    """The status changes to a result's kind only after the configured streak of that kind."""
    settings = CheckSettings(success_before_passing=need_ok, failures_before_critical=need_fail)
    state = CheckState(settings, 0.0)
    streak_kind, streak = None, 0
    for i, result in enumerate(results):
        before = state.status
        kind = result is C
        streak = streak + 1 if kind == streak_kind else 1
        streak_kind = kind
        after = state.record(result, "", float(i))
        if after is not before:
            assert streak >= (need_fail if kind else need_ok)
            assert (after is C) == kind


@pytest.mark.parametrize(
    "kwargs",
    [{"interval": 0}, {"timeout": -1}, {"deregister_critical_after": -5},
     {"success_before_passing": -1}],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, float]) -> None:
    """Non-positive intervals, negative thresholds and limits are refused with ConfigError."""
    with pytest.raises(ConfigError, match="CheckSettings"):
        CheckSettings(**kwargs)  # type: ignore[arg-type]


# --- TTL checks -------------------------------------------------------------------------------


def test_ttl_check_is_critical_until_reported_then_expires() -> None:
    """A TTL check is critical before any report, passing within the TTL, critical after it."""
    clock = FakeClock()
    ttl = TtlCheck(10, clock=clock)
    assert ttl.result(clock())[0] is C
    ttl.pass_ttl("alive")
    assert ttl.result(clock.advance(10)) == (P, "alive")
    health, output = ttl.result(clock.advance(0.01))
    assert health is C
    assert "TTL expired" in output


def test_ttl_check_reports_warning_and_failure() -> None:
    """warn_ttl and fail_ttl set the result to warning and critical with the note."""
    clock = FakeClock()
    ttl = TtlCheck(5, clock=clock)
    ttl.warn_ttl("slow")
    assert ttl.result(clock()) == (W, "slow")
    ttl.fail_ttl("disk full")
    assert ttl.result(clock()) == (C, "disk full")


def test_ttl_must_be_positive() -> None:
    """A TTL of zero is refused with ConfigError."""
    with pytest.raises(ConfigError, match=r"TtlCheck\.ttl"):
        TtlCheck(0)


# --- the checker, with the memory registry ---------------------------------------------------


def _instance(iid: str = "a1", port: int = 8001) -> Instance:
    return Instance(id=iid, service="api", address="127.0.0.1", port=port)


Probe = Callable[[str, float], Awaitable[tuple[Health, str]]]


def scripted(results: list[tuple[Health, str]]) -> Probe:
    """A probe that answers from a list (last answer repeats)."""

    async def probe(url: str, timeout: float) -> tuple[Health, str]:
        return results.pop(0) if len(results) > 1 else results[0]

    return probe


async def _health(registry: MemoryRegistry, iid: str) -> Health | None:
    found = {i.id: i for i in await registry.discover("api", healthy_only=False)}
    return found[iid].health if iid in found else None


async def test_checker_writes_transitions_to_registry() -> None:
    """run_once writes each status change, so discovery stops returning a critical instance."""
    registry = MemoryRegistry()
    await registry.register(_instance())
    probe = scripted([(P, "200 OK"), (C, "500"), (P, "200 OK")])
    checker = HealthChecker(registry, probe=probe)
    checker.add_http(_instance())
    await checker.run_once()
    assert await _health(registry, "a1") is P
    await checker.run_once()
    assert await registry.discover("api") == []
    assert checker.report()[0].output == "500"
    await checker.run_once()
    assert [i.id for i in await registry.discover("api")] == ["a1"]
    await checker.close()
    await registry.close()


async def test_checker_deregisters_after_critical_too_long() -> None:
    """An instance critical for longer than deregister_critical_after is deregistered."""
    clock = FakeClock()
    registry = MemoryRegistry()
    await registry.register(_instance())
    settings = CheckSettings(deregister_critical_after=30)
    checker = HealthChecker(registry, probe=scripted([(C, "down")]), clock=clock,
                            settings=settings)
    checker.add_http(_instance())
    await checker.run_once()
    assert await _health(registry, "a1") is C
    clock.advance(30)
    await checker.run_once()
    assert await _health(registry, "a1") is C
    clock.advance(1)
    await checker.run_once()
    assert await _health(registry, "a1") is None
    assert checker.report() == []
    await checker.close()
    await registry.close()


async def test_ttl_check_in_checker_expires_in_registry() -> None:
    """A TTL check passes while reported and turns the instance critical once the TTL lapses."""
    clock = FakeClock()
    registry = MemoryRegistry()
    await registry.register(_instance())
    checker = HealthChecker(registry, clock=clock)
    ttl = checker.add_ttl(_instance(), 15)
    ttl.pass_ttl()
    await checker.run_once()
    assert await _health(registry, "a1") is P
    clock.advance(16)
    await checker.run_once()
    assert await _health(registry, "a1") is C
    await checker.close()
    await registry.close()


async def test_running_checker_writes_ttl_report_promptly() -> None:
    """In a started checker a pass_ttl() wakes the loop, so the report lands without waiting."""
    registry = MemoryRegistry()
    await registry.register(_instance())
    async with HealthChecker(registry, settings=CheckSettings(interval=3600)) as checker:
        ttl = checker.add_ttl(_instance(), 60)
        await until_health(registry, "a1", C)
        ttl.pass_ttl("ok")
        await until_health(registry, "a1", P)
    await registry.close()


async def test_watch_service_checks_instances_as_they_come_and_go() -> None:
    """watch_service adds a check per registered instance and drops it when the instance leaves."""
    registry = MemoryRegistry()
    checker = HealthChecker(registry, probe=scripted([(W, "429")]),
                            settings=CheckSettings(interval=0.01))
    checker.watch_service("api")
    await checker.start()
    await registry.register(_instance("a1"))
    await registry.register(_instance("a2", 8002))
    await until_health(registry, "a2", W)
    assert [r.instance_id for r in checker.report()] == ["a1", "a2"]
    await registry.deregister("api", "a2")
    await until_health(registry, "a2", None)
    # The registry re-notifies on every write; a1's next write proves the checker saw a2 leave.
    await registry.set_health("api", "a1", C)
    await until_health(registry, "a1", W)
    assert [r.instance_id for r in checker.report()] == ["a1"]
    await checker.close()
    await registry.close()


# --- HTTP probe against a real local server --------------------------------------------------


@contextlib.asynccontextmanager
async def server(mode: list[str]) -> AsyncIterator[int]:
    """A local HTTP server answering per ``mode[0]``: "200", "500", "429" or "hang"."""
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if mode[0] == "hang":
            await stop.wait()
        else:
            writer.write(f"HTTP/1.1 {mode[0]} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        stop.set()
        srv.close()
        await srv.wait_closed()


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


async def test_checker_follows_real_server_200_500_silent() -> None:
    """A started checker tracks a real server through 200, 500 and silence into the registry."""
    mode = ["200"]
    registry = MemoryRegistry()
    async with server(mode) as port:
        inst = _instance(port=port)
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
