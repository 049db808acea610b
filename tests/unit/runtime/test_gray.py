"""Gray release of config: targeting by tag and percent, stable buckets, promote, rollback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from qanat.backends.memory import MemoryConfigStore
from qanat.errors import ConfigError, Conflict, NotFound
from qanat.ports import Instance
from qanat.runtime import gray
from qanat.runtime.typed_config import BoundConfig

P = "config/orders"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)
    timeout: float = 1.0
    retries: int = 3


@pytest.fixture
async def store() -> AsyncIterator[MemoryConfigStore]:
    s = MemoryConfigStore()
    yield s
    await s.close()


async def bind(store: MemoryConfigStore, iid: str, *tags: str) -> BoundConfig[Settings]:
    bound = BoundConfig(store, P, Settings, instance_id=iid, tags=tags)
    await bound.start()
    return bound


async def last_revision(store: MemoryConfigStore) -> int:
    """The store revision of the latest change to the gray key (to wait for it)."""
    return (await store.history(gray.gray_key(P), limit=1))[0].revision


# --- pure targeting ---------------------------------------------------------------------------


def test_gray_key_sits_next_to_the_prefix() -> None:
    """The release key is the prefix plus ``@gray``, outside the prefix's own keys."""
    assert gray.gray_key("config/orders/") == "config/orders@gray"
    assert not gray.gray_key(P).startswith(P + "/")


def test_targets_by_tag() -> None:
    """A tag release targets instances carrying any of its tags and no others."""
    release = gray.GrayRelease(P, {"timeout": "2"}, tags=("canary", "beta"))
    assert release.targets("a", ["x", "beta"])
    assert not release.targets("b", ["x"])
    assert not release.targets(None, [])


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 100), st.integers(0, 2**32))
def test_percent_selects_about_that_share_of_ids(percent: float, seed: int) -> None:
    """Percent p targets about p % of 4000 distinct ids (within 5 standard deviations)."""
    n = 4000
    ids = [f"{seed}-{i}" for i in range(n)]
    release = gray.GrayRelease(P, {"timeout": "2"}, percent=percent)
    hit = sum(release.targets(i) for i in ids)
    p = percent / 100
    assert abs(hit - p * n) <= 5 * (n * p * (1 - p)) ** 0.5 + 1


@given(st.text(min_size=1), st.floats(0, 100), st.floats(0, 100))
def test_bucket_is_stable_and_raising_percent_only_adds(iid: str, p: float, q: float) -> None:
    """The same id always gets the same answer, and one targeted at p is targeted at any q >= p."""
    low, high = sorted((p, q))
    at_low = gray.GrayRelease(P, {"timeout": "2"}, percent=low)
    at_high = gray.GrayRelease(P, {"timeout": "2"}, percent=high)
    assert gray.bucket(P, iid) == gray.bucket(P, iid)
    assert at_low.targets(iid) == at_low.targets(iid)
    assert not at_low.targets(iid) or at_high.targets(iid)


def test_select_picks_the_targeted_instances() -> None:
    """select() returns the instances a release targets, by tag or by bucket."""
    release = gray.GrayRelease(P, {"timeout": "2"}, tags=("canary",), percent=0.0)
    fleet = [
        Instance(id=f"i{n}", service="s", address="h", port=1, tags=("canary",) if n == 2 else ())
        for n in range(4)
    ]
    assert [i.id for i in release.select(fleet)] == ["i2"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ('{"values": {"a": "1"}}', "give tags, percent"),
        ('{"values": {"a": "1"}, "percent": 120}', "from 0 to 100"),
        ('{"values": {"a": 1}, "tags": ["x"]}', "string values"),
        ("[]", "JSON object"),
    ],
)
def test_malformed_release_document_is_config_error(text: str, problem: str) -> None:
    """A broken release document is a ConfigError naming the gray key and the problem."""
    with pytest.raises(ConfigError, match=problem) as info:
        gray.parse_release(P, text, 1)
    assert info.value.source == "config/orders@gray"


# --- with bound configs -----------------------------------------------------------------------


async def test_gray_by_tag_applies_only_to_tagged_instances(store: MemoryConfigStore) -> None:
    """A tag release changes the tagged instance's config and leaves the others on the base."""
    await store.set(f"{P}/timeout", "1.5")
    canary, stable = await bind(store, "a", "canary"), await bind(store, "b")
    release = await gray.start(store, P, {"timeout": 2.5}, tags=["canary"])
    for bound in (canary, stable):
        await bound.wait_for_revision(release.revision)
    assert canary.current.timeout == 2.5
    assert canary.gray == release
    assert stable.current.timeout == 1.5
    assert stable.gray is None
    assert await gray.status(store, P) == release
    for bound in (canary, stable):
        await bound.close()


async def test_instance_started_during_gray_gets_overlay(store: MemoryConfigStore) -> None:
    """An instance that starts while a release targets it starts with the overlay."""
    await gray.start(store, P, {"retries": 9}, tags=["canary"])
    bound = await bind(store, "a", "canary")
    assert bound.current.retries == 9
    await bound.close()


async def test_gray_by_percent_follows_buckets(store: MemoryConfigStore) -> None:
    """A percent release reaches exactly the instances whose bucket is below the percent."""
    ids = [f"inst-{n}" for n in range(12)]
    bounds = [await bind(store, i) for i in ids]
    release = await gray.start(store, P, {"retries": 7}, percent=50)
    for bound in bounds:
        await bound.wait_for_revision(release.revision)
    got = {b.instance_id for b in bounds if b.current.retries == 7}
    assert got == {i for i in ids if gray.bucket(P, i) < 50}
    for bound in bounds:
        await bound.close()


async def test_promote_makes_gray_the_base_without_touching_canaries(
    store: MemoryConfigStore,
) -> None:
    """Promote writes the overlay to the base keys and ends the release; canaries see no change."""
    canary, stable = await bind(store, "a", "canary"), await bind(store, "b")
    release = await gray.start(store, P, {"timeout": 4}, tags=["canary"])
    await canary.wait_for_revision(release.revision)
    canary_changes: list[Settings] = []
    canary.on_change(lambda old, new: canary_changes.append(new))
    await gray.promote(store, P)
    end = await last_revision(store)
    for bound in (canary, stable):
        await bound.wait_for_revision(end)
        assert bound.current.timeout == 4.0
    assert (await store.get(f"{P}/timeout")) is not None
    assert await gray.status(store, P) is None
    assert canary_changes == []
    assert canary.gray is None
    for bound in (canary, stable):
        await bound.close()


async def test_rollback_returns_targets_to_base(store: MemoryConfigStore) -> None:
    """Rollback removes the release; targeted instances go back to the base config."""
    canary = await bind(store, "a", "canary")
    release = await gray.start(store, P, {"retries": 1}, tags=["canary"])
    await canary.wait_for_revision(release.revision)
    assert canary.current.retries == 1
    await gray.rollback(store, P)
    await canary.wait_for_revision(await last_revision(store))
    assert canary.current.retries == 3
    assert await store.get(f"{P}/retries") is None
    await canary.close()


async def test_invalid_overlay_is_rejected_on_targets(store: MemoryConfigStore) -> None:
    """An overlay that does not validate is rejected on the targeted instance, which stays put."""
    canary = await bind(store, "a", "canary")
    release = await gray.start(store, P, {"retries": "lots"}, tags=["canary"])
    await canary.wait_for_revision(release.revision)
    assert canary.current.retries == 3
    assert canary.last_error is not None
    assert canary.last_error.key == f"{P}/retries"
    await canary.close()


async def test_start_validates_against_model_before_writing(store: MemoryConfigStore) -> None:
    """With a model, a bad gray value is a ConfigError and nothing is written."""
    with pytest.raises(ConfigError, match="config/orders/retries"):
        await gray.start(store, P, {"retries": "lots"}, tags=["c"], model=Settings)
    assert await gray.status(store, P) is None


async def test_second_start_conflicts_and_missing_release_is_not_found(
    store: MemoryConfigStore,
) -> None:
    """Only one release per prefix runs at a time; promote or rollback of none is NotFound."""
    await gray.start(store, P, {"retries": 2}, percent=10)
    with pytest.raises(Conflict, match="already running"):
        await gray.start(store, P, {"retries": 4}, percent=10)
    await gray.rollback(store, P)
    with pytest.raises(NotFound):
        await gray.promote(store, P)
    with pytest.raises(NotFound):
        await gray.rollback(store, P)


async def test_start_needs_a_target(store: MemoryConfigStore) -> None:
    """A release with neither tags nor percent is refused, saying what to give."""
    with pytest.raises(ConfigError, match="give tags, percent"):
        await gray.start(store, P, {"retries": 2})


async def test_concurrent_binds_all_see_release(store: MemoryConfigStore) -> None:
    """Many instances bound at once all converge on the release that targets them by tag."""
    bounds = await asyncio.gather(*(bind(store, f"i{n}", "canary") for n in range(10)))
    release = await gray.start(store, P, {"timeout": 9}, tags=["canary"])
    for bound in bounds:
        await bound.wait_for_revision(release.revision)
    assert {b.current.timeout for b in bounds} == {9.0}
    for bound in bounds:
        await bound.close()
