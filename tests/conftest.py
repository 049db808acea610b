"""Fixtures and rules the whole suite shares.

Servers. A fixture for a real server (``redis_url`` here, ``etcd_url`` in
``tests/integration/conftest.py``) checks that the server answers and skips
the test when it does not, with a message saying what was tried. Under CI (the
``CI`` environment variable is set) a server that does not answer is a
failure, never a skip: CI starts every server the suite needs
(``scripts/servers.sh``), so a skip there would hide a broken setup.

That rule is enforced once, here, for every test under ``tests/integration``
and ``tests/e2e`` (which this file also marks ``integration`` and ``e2e``): when
``CI`` is set, a skip of such a test, or of such a module, is reported as a
failure carrying the skip's reason.

Also here: ``redis_prefix`` (a key namespace for one test, cleaned up) and
``restore_logging`` (for tests of code that configures process-wide logging).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis
import structlog

pytest_plugins = ["pytester"]  # tests/unit/test_suite_rules.py runs small suites with these rules

REDIS_URL = os.environ.get("QANAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_TESTS = Path(__file__).resolve().parent
_NEEDS_SERVERS = {_TESTS / "integration": "integration", _TESTS / "e2e": "e2e"}


def under_ci() -> bool:
    """Whether this run is CI's (``CI`` set to anything but empty, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def _suite(path: Path) -> str | None:
    """``integration`` or ``e2e`` when ``path`` lies in that folder, else None."""
    for folder, marker in _NEEDS_SERVERS.items():
        if path.is_relative_to(folder):
            return marker
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by its folder, so ``-m integration`` / ``-m "not e2e"`` select by it."""
    for item in items:
        marker = _suite(item.path)
        if marker is not None and item.get_closest_marker(marker) is None:
            item.add_marker(marker)


def _as_failure(report: pytest.TestReport | pytest.CollectReport, path: Path) -> None:
    """Under CI, turn the skip of an integration or e2e test (or module) into a failure."""
    if not (report.skipped and under_ci() and _suite(path) is not None):
        return
    if hasattr(report, "wasxfail"):
        return  # an expected failure is not a missing server
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"CI is set, so this {_suite(path)} test may not skip (CI runs every server it "
        f"needs; see tests/conftest.py). It skipped because: {reason}"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _as_failure(report, item.path)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if isinstance(collector, pytest.Module):
        _as_failure(report, collector.path)
    return report


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis (``QANAT_TEST_REDIS_URL``, default 127.0.0.1:6379 db 0), once it answers
    PING; otherwise the test is skipped, or fails under CI."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at {REDIS_URL} did not answer PING ({exc}); scripts/servers.sh starts it"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test or run uses; every key under it is deleted afterwards."""
    prefix = f"qanat-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the root logger's handlers and level, and structlog's defaults, after a test
    of code that configures process-wide logging (``Service.start``, ``configure_logging``)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
