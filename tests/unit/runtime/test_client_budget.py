"""The retry budget's floor: it scales with the calls per instance unless a fixed one is set."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.runtime.client_support import harness, reset, retrying, settings, status

from qanat.core.retry import RetryBudget
from qanat.errors import ConfigError
from qanat.http import UpstreamReset
from qanat.policy import load_policies
from qanat.runtime.client import settings_from_policy

CALLERS = 16  # round robin over a live and a dead instance: 8 calls meet the dead one


async def concurrent_gets(budget: RetryBudget | None, callers: int = CALLERS, *,
                          dead: bool = False) -> list[object]:
    """``callers`` GETs at once on u0 (answers 200) and u1, which reads each request and resets
    the connection (the call reached it) or, with ``dead``, d0 where nothing listens (the call
    never reached an instance); their outcomes."""
    conf = settings(retry=retrying(3))
    kw = {} if budget is None else {"budget": budget}
    handlers = (status(200),) if dead else (status(200), reset)
    async with harness(*handlers, dead=int(dead), client_settings=conf, **kw) as h:
        outcomes = await asyncio.gather(
            *(h.client.get(f"/c{n}") for n in range(callers)), return_exceptions=True
        )
        stats = h.client.budget.stats()
        assert (stats.active_requests, stats.active_retries) == (0, 0)
        return outcomes


async def test_every_caller_of_a_dead_instance_is_retried() -> None:
    """16 concurrent GETs, one instance of two dead: all 16 succeed, none is refused a retry."""
    outcomes = await concurrent_gets(None, dead=True)
    assert [getattr(o, "status", o) for o in outcomes] == [200] * CALLERS
    assert sorted(getattr(o, "attempts", 0) for o in outcomes) == [1] * 8 + [2] * 8


async def test_an_explicit_floor_of_three_keeps_envoys_behaviour() -> None:
    """With ``min_retry_concurrency=3`` the 4th simultaneous retry is refused: that call fails."""
    budget = RetryBudget(min_retry_concurrency=3)
    outcomes = await concurrent_gets(budget)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert failed and all(isinstance(o, UpstreamReset) for o in failed)
    assert all("retry budget spent" in " ".join(o.__notes__) for o in failed)
    # the 8 calls on u1 are reset together: at most 3 retry on u0 at once, the rest are refused
    assert len(failed) == budget.stats().refused <= 8 - 3


async def test_calls_that_never_reached_an_instance_need_no_budget() -> None:
    """A refused connection is retried even with an empty budget (0 %, no floor): nothing
    reached an instance, so nothing is amplified there (Finagle's requeues)."""
    budget = RetryBudget(percent=0, min_retry_concurrency=0)
    outcomes = await concurrent_gets(budget, dead=True)
    assert [getattr(o, "status", o) for o in outcomes] == [200] * CALLERS
    assert budget.stats().refused == 0


def test_scaling_floor_is_the_calls_one_instance_carries() -> None:
    """20 calls over 2 hosts: 10 retries at once; over 4 hosts: 5; over 10 hosts the 20 % wins."""
    for hosts, allowed in ((2, 10), (4, 5), (10, 4), (40, 4)):
        budget = RetryBudget()
        for _ in range(20):
            budget.request_started()
        granted = sum(budget.try_retry(hosts) for _ in range(20))
        assert granted == allowed, hosts
        assert budget.stats().refused == 20 - allowed


def test_one_host_or_none_keeps_the_floor_of_three() -> None:
    """With nowhere else to retry, the scaling floor is Envoy's 3, however many calls run."""
    for hosts in (0, 1):
        budget = RetryBudget()
        for _ in range(12):
            budget.request_started()
        assert sum(budget.try_retry(hosts) for _ in range(12)) == 3


@given(
    active=st.integers(0, 200), hosts=st.integers(0, 50), fixed=st.none() | st.integers(0, 20),
    percent=st.floats(0.0, 100.0),
)
def test_retries_granted_never_exceed_the_floor_or_the_percentage(
    active: int, hosts: int, fixed: int | None, percent: float
) -> None:
    """Granted retries == floor(max(fixed or max(3, ceil(active/hosts)), percent % of active))."""
    budget = RetryBudget(percent, fixed)
    for _ in range(active):
        budget.request_started()
    granted = 0
    while granted <= active + 50 and budget.try_retry(hosts):
        granted += 1
    if fixed is not None:
        floor = fixed
    elif hosts < 2:
        floor = 3
    else:
        floor = max(3, -(-active // hosts))
    assert granted == int(max(floor, percent / 100 * active))
    assert budget.floor(hosts) == floor


def test_a_fixed_floor_wins_over_the_scaling_default() -> None:
    """``min_retry_concurrency`` given (even 0) is used as is, whatever the host count."""
    assert RetryBudget(min_retry_concurrency=0).floor(2) == 0
    assert RetryBudget(min_retry_concurrency=16).floor(1) == 16
    assert RetryBudget().min_retry_concurrency is None


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_a_bad_floor_is_a_config_error(bad: object) -> None:
    """A floor that is not a whole number >= 0 (or None) is refused, naming the budget."""
    with pytest.raises(ConfigError, match=r"RetryBudget: .*min_retry_concurrency"):
        RetryBudget(min_retry_concurrency=bad)  # type: ignore[arg-type]


def test_a_policy_without_budget_min_concurrency_gets_the_scaling_floor() -> None:
    """``budgetMinConcurrency`` left out scales; written down, it is the fixed floor."""
    policies = load_policies({
        "retries": {"plain": {"maxRetries": 2},
                    "fixed": {"maxRetries": 2, "budgetMinConcurrency": 3}},
        "targets": {"services": {"users": {"retry": "plain"}, "catalog": {"retry": "fixed"}}},
    })
    users = settings_from_policy(policies.for_target("users")).budget
    catalog = settings_from_policy(policies.for_target("catalog")).budget
    assert users is not None and users.min_retry_concurrency is None
    assert catalog is not None and catalog.min_retry_concurrency == 3


async def test_policy_budgets_behave_as_their_floors_say() -> None:
    """Through ``qanat.yaml``-style policies: 8 calls reset at once by one instance of two;
    the scaling floor (at least 8 / 2 = 4 retries at once) refuses fewer than a floor of 3."""
    policies = load_policies({
        "retries": {"plain": {"maxRetries": 2},
                    "fixed": {"maxRetries": 2, "budgetMinConcurrency": 3}},
        "targets": {"services": {"users": {"retry": "plain"}, "catalog": {"retry": "fixed"}}},
    })
    scaling = settings_from_policy(policies.for_target("users")).budget
    fixed = settings_from_policy(policies.for_target("catalog")).budget
    assert scaling is not None and fixed is not None
    lost = [sum(isinstance(o, UpstreamReset) for o in await concurrent_gets(b))
            for b in (scaling, fixed)]
    assert lost[0] < lost[1] and lost[1] == fixed.stats().refused
