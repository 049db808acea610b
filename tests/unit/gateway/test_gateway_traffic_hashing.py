"""Consistent hashing per route: the ``hash_on`` key (header, cookie, client address), pure."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qanat.errors import ConfigError
from qanat.gateway.config import parse_routes
from qanat.gateway.upstream import Pick, StaticResolver, Upstream, hash_key
from qanat.ports import Instance
from qanat.testing import FakeClock

HeaderList = list[tuple[bytes, bytes]]
keys = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
               max_size=24)
cookie_values = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1,
                        max_size=24)


def spec(upstream: dict[str, Any]) -> Any:
    return parse_routes([{"name": "r", "upstream": upstream}])[0].upstream


def hashed(n: int, **extra: Any) -> dict[str, Any]:
    extra.setdefault("hash_on", {"header": "x-user-id"})
    return {"kind": "static", "balancer": "consistent_hash",
            "targets": [{"url": f"http://10.0.0.{i}:80"} for i in range(1, n + 1)], **extra}


def choose(up: Upstream, headers: HeaderList, clock: FakeClock, tried: tuple[str, ...] = (),
           peer: bytes = b"") -> str:
    choice = up.choose(headers, list(tried), clock(), peer)
    assert isinstance(choice, Pick), choice
    up.settle(choice, 200, 0.0, clock())
    return choice.target.id


def user(value: str) -> HeaderList:
    return [(b"x-user-id", value.encode())]


@pytest.mark.parametrize(("upstream", "message"), [
    ({"balancer": "consistent_hash"}, "needs hash_on"),
    ({"balancer": "round_robin", "hash_on": {"header": "x-a"}}, "only works with"),
    ({"balancer": "consistent_hash", "hash_on": {}}, "exactly one of header, cookie, source"),
    ({"balancer": "consistent_hash", "hash_on": {"header": "x-a", "cookie": "s"}},
     "exactly one"),
    ({"balancer": "consistent_hash", "hash_on": {"source": "server_address"}}, "client_address"),
    ({"balancer": "consistent_hash", "hash_on": {"header": "bad name"}}, "not a valid header"),
    ({"balancer": "consistent_hash", "hash_on": {"header": "x-a"}, "hash_balance_factor": 100},
     "greater than 100"),
    ({"balancer": "p2c_ewma", "hash_balance_factor": 150}, "only works with"),
])
def test_hash_on_is_validated(upstream: dict[str, Any], message: str) -> None:
    """hash_on needs consistent_hash (and back), exactly one source, and a factor above 100."""
    raw = {"kind": "static", "targets": [{"url": "http://10.0.0.1:80"}], **upstream}
    with pytest.raises(ConfigError, match=message) as info:
        spec(raw)
    assert "upstream" in str(info.value)


def test_the_key_comes_from_the_header_cookie_or_peer() -> None:
    """Each source reads its own attribute; a missing or empty one gives no key."""
    headers: HeaderList = [(b"x-user-id", b"u7"), (b"cookie", b"a=1; session=s9"),
                           (b"x-user-id", b"u8")]
    read = hash_key(spec(hashed(1)).hash_on)
    assert read is not None and read(headers, b"10.1.1.1") == "u7"
    assert read([(b"x-user-id", b"")], b"10.1.1.1") is None
    by_cookie = hash_key(spec(hashed(1, hash_on={"cookie": "session"})).hash_on)
    assert by_cookie is not None and by_cookie(headers, b"p") == "s9"
    assert by_cookie([(b"cookie", b"other=1")], b"p") is None
    by_peer = hash_key(spec(hashed(1, hash_on={"source": "client_address"})).hash_on)
    assert by_peer is not None and by_peer(headers, b"10.1.1.1") == "10.1.1.1"
    assert hash_key(None) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(keys, min_size=1, max_size=30, unique=True))
def test_the_same_key_always_lands_on_the_same_instance(values: list[str]) -> None:
    """Asked again and again, in any order, a key is sent to one instance only."""
    clock = FakeClock()
    up = Upstream(spec(hashed(5)), None, "r", clock=clock)
    first = {v: choose(up, user(v), clock) for v in values}
    for v in reversed(values):
        assert choose(up, user(v), clock) == first[v]
    other = Upstream(spec(hashed(5)), None, "r", clock=clock)  # another gateway process
    assert {v: choose(other, user(v), clock) for v in values} == first


def test_different_keys_spread_over_every_instance() -> None:
    """2,000 users over 4 instances: each gets its share within 25 %."""
    clock = FakeClock()
    up = Upstream(spec(hashed(4)), None, "r", clock=clock)
    counts = Counter(choose(up, user(f"user-{i}"), clock) for i in range(2000))
    assert len(counts) == 4
    assert all(375 <= n <= 625 for n in counts.values()), counts


@settings(max_examples=25, deadline=None)
@given(st.lists(cookie_values, min_size=20, max_size=80, unique=True), st.integers(0, 4))
def test_an_instance_leaving_moves_only_its_own_keys(values: list[str], gone: int) -> None:
    """Removing one instance from discovery re-homes exactly the keys it owned."""
    clock = FakeClock()
    instances = [Instance(f"i{n}", "svc", f"10.0.0.{n}", 80) for n in range(5)]
    resolver = StaticResolver({"svc": instances})
    up = Upstream(spec({"kind": "service", "service": "svc", "balancer": "consistent_hash",
                        "hash_on": {"cookie": "session"}}), resolver, "r", clock=clock)

    def jar(v: str) -> HeaderList:
        return [(b"cookie", f"session={v}".encode())]

    before = {v: choose(up, jar(v), clock) for v in values}
    resolver.set("svc", [i for i in instances if i.id != f"i{gone}"])
    after = {v: choose(up, jar(v), clock) for v in values}
    for v in values:
        if before[v] == f"i{gone}":
            assert after[v] != f"i{gone}"
        else:
            assert after[v] == before[v]


def test_client_address_hashing_uses_the_peer() -> None:
    """source: client_address keeps each client on one instance and spreads clients."""
    clock = FakeClock()
    up = Upstream(spec(hashed(3, hash_on={"source": "client_address"})), None, "r", clock=clock)
    homes = {}
    for i in range(60):
        peer = f"192.0.2.{i}".encode()
        homes[peer] = choose(up, [], clock, peer=peer)
        assert choose(up, [(b"x-user-id", b"ignored")], clock, peer=peer) == homes[peer]
    assert len(set(homes.values())) == 3


def test_a_retry_for_a_key_goes_to_one_fixed_other_instance() -> None:
    """After its instance failed, a key is retried on another instance, the same one each
    time; the keys of one instance do not all fall on a single neighbour."""
    clock = FakeClock()
    up = Upstream(spec(hashed(4)), None, "r", clock=clock)
    retried: dict[str, set[str]] = {}
    for i in range(300):
        v = f"user-{i}"
        home = choose(up, user(v), clock)
        seconds = {choose(up, user(v), clock, tried=(home,)) for _ in range(3)}
        assert home not in seconds and len(seconds) == 1
        retried.setdefault(home, set()).update(seconds)
    assert all(len(targets) >= 2 for targets in retried.values()), retried


def test_bounded_loads_cap_one_hot_key() -> None:
    """With hash_balance_factor 150, one key's in-flight requests overflow to other
    instances once its home holds its share (Mirrokni et al.)."""
    clock = FakeClock()
    up = Upstream(spec(hashed(4, hash_balance_factor=150)), None, "r", clock=clock)
    picks = [up.choose(user("hot"), [], clock()) for _ in range(40)]
    assert all(isinstance(p, Pick) for p in picks)
    counts = Counter(p.target.id for p in picks if isinstance(p, Pick))
    assert max(counts.values()) <= 15 and len(counts) >= 3  # ceil(1.5 * 40 / 4)
    unbounded = Upstream(spec(hashed(4)), None, "r", clock=clock)
    assert len({choose(unbounded, user("hot"), clock) for _ in range(40)}) == 1


def test_a_request_without_the_key_still_gets_an_instance() -> None:
    """No header: the ring picks at random instead of refusing."""
    clock = FakeClock()
    up = Upstream(spec(hashed(3)), None, "r", clock=clock)
    assert len({choose(up, [], clock) for _ in range(60)}) > 1
