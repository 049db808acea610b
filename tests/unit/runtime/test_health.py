"""The health checker against the memory registry: writes, outputs, TTLs, deregistration.

The pure rules are in tests/unit/core/test_health.py, the HTTP probe in test_health_http.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.unit.runtime.health_support import until_health

from qanat.backends.memory import MemoryRegistry
from qanat.ports import Health, Instance
from qanat.runtime.health import CheckSettings, HealthChecker
from qanat.testing import FakeClock

P, W, C = Health.PASSING, Health.WARNING, Health.CRITICAL


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


async def test_checker_writes_output_only_changes_at_the_update_interval() -> None:
    """A new output with the same status reaches the registry only after output_update_interval."""
    clock = FakeClock()
    registry = MemoryRegistry()
    await registry.register(_instance())
    settings = CheckSettings(output_update_interval=300)
    checker = HealthChecker(registry, probe=scripted([(P, "up 1"), (P, "up 2")]), clock=clock,
                            settings=settings)  # fmt: skip
    checker.add_http(_instance())
    await checker.run_once()
    assert await registry.outputs("api") == {"a1": "up 1"}
    await checker.run_once()
    assert await registry.outputs("api") == {"a1": "up 1"}
    clock.advance(300)
    await checker.run_once()
    assert await registry.outputs("api") == {"a1": "up 2"}
    await checker.close()
    await registry.close()


async def test_checker_deregisters_after_critical_too_long() -> None:
    """An instance critical for longer than deregister_critical_after is deregistered."""
    clock = FakeClock()
    registry = MemoryRegistry()
    await registry.register(_instance())
    settings = CheckSettings(deregister_critical_after=30)
    checker = HealthChecker(registry, probe=scripted([(C, "down")]), clock=clock, settings=settings)
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
    checker = HealthChecker(
        registry, probe=scripted([(W, "429")]), settings=CheckSettings(interval=0.01)
    )
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


def test_runtime_health_still_exports_the_split_names() -> None:
    """Names that moved to core.health and health_http stay importable from runtime.health."""
    from qanat.core import health as core
    from qanat.runtime import health, health_http

    assert health.CheckState is core.CheckState and health.TtlCheck is core.TtlCheck
    assert health.classify_status is core.classify_status
    assert health.probe_http is health_http.probe_http
    assert health.parse_status_line is health_http.parse_status_line
