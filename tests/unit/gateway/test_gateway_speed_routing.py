"""Per-request shortcuts in routing give the same answers as the full computation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qanat.gateway import routing
from qanat.gateway.config import parse_routes
from qanat.gateway.routing import compile_routes, route_host

authorities = st.one_of(
    st.binary(max_size=30),
    st.from_regex(rb"\A[A-Za-z0-9.\-]{0,20}(:[0-9]{1,5})?\.?\Z"),
    st.from_regex(rb"\A\[[0-9a-fA-F:]{2,20}\](:[0-9]{1,5})?\Z"),
)


@given(authorities)
def test_cached_route_host_equals_a_fresh_computation(authority: bytes) -> None:
    """A Host value answered from the cache gives what computing it afresh gives."""
    routing._HOSTS.pop(authority, None)
    fresh = route_host(authority)
    assert route_host(authority) == fresh
    assert fresh == fresh.lower() and not fresh.endswith(b".")


@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=60))
def test_the_host_cache_stays_bounded(values: list[bytes]) -> None:
    """Clients choose Host values: the cache never holds more than its bound."""
    for v in values:
        route_host(v)
    assert len(routing._HOSTS) <= 1024


def test_the_host_cache_is_bounded_under_many_distinct_hosts() -> None:
    """Thousands of distinct Host values still leave at most 1024 cached."""
    for i in range(3000):
        assert route_host(b"H%d.Example.:80" % i) == b"h%d.example" % i
    assert len(routing._HOSTS) <= 1024


def test_a_route_without_matchers_accepts_any_method_and_headers() -> None:
    """The shortcut for routes without method or header matchers accepts everything."""
    table = compile_routes(parse_routes([
        {"name": "any", "upstream": {"kind": "static", "targets": [{"url": "http://a:1"}]}},
        {"name": "get", "match": {"prefix": "/g", "methods": ["GET"],
                                  "headers": [{"name": "x-k", "present": True}]},
         "upstream": {"kind": "static", "targets": [{"url": "http://a:1"}]}},
    ]))
    any_route, get_route = table.routes
    assert any_route.accepts(b"BREW", []) and any_route.accepts(b"GET", [(b"x", b"y")])
    assert get_route.accepts(b"GET", [(b"x-k", b"1")])
    assert not get_route.accepts(b"GET", []) and not get_route.accepts(b"POST", [(b"x-k", b"1")])
