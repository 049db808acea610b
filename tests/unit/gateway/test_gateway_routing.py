"""Route table: precedence, host matching, matchers, rewrites, and config errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.errors import ConfigError
from qanat.gateway.config import parse_routes
from qanat.gateway.routing import RouteTable, compile_routes, route_host

UP = {"kind": "static", "targets": [{"url": "http://127.0.0.1:9"}]}


def _table(*routes: dict[str, Any]) -> RouteTable:
    return compile_routes(parse_routes([{"upstream": UP, **r} for r in routes]))


def _name(table: RouteTable, path: str, method: str = "GET", host: str = "h",
          headers: list[tuple[bytes, bytes]] | None = None) -> str | None:
    found = table.match(host.encode(), path.encode(), method.encode(), headers or [])
    return None if found is None else found[0].name


def test_exact_beats_pattern_beats_prefix_regardless_of_order() -> None:
    """Exact path > pattern > prefix, even when declared in the reverse order."""
    t = _table(
        {"name": "prefix", "match": {"prefix": "/api/users"}},
        {"name": "pattern", "match": {"pattern": "/api/users/{id}"}},
        {"name": "exact", "match": {"path": "/api/users/me"}},
    )
    assert _name(t, "/api/users/me") == "exact"
    assert _name(t, "/api/users/42") == "pattern"
    assert _name(t, "/api/users/42/orders") == "prefix"
    assert _name(t, "/api/users") == "prefix"


def test_longest_prefix_wins_then_declaration_order() -> None:
    """Among prefixes the longest wins; equal prefixes go to the first declared."""
    t = _table(
        {"name": "root", "match": {"prefix": "/"}},
        {"name": "api", "match": {"prefix": "/api"}},
        {"name": "api-v2", "match": {"prefix": "/api/v2/"}},
        {"name": "api-again", "match": {"prefix": "/api"}},
    )
    assert _name(t, "/api/v2/x") == "api-v2"
    assert _name(t, "/api/v1") == "api"
    assert _name(t, "/other") == "root"


def test_prefix_matches_whole_segments_only() -> None:
    """'/api' takes /api and /api/x but never /apix or /api-internal."""
    t = _table({"name": "api", "match": {"prefix": "/api"}})
    assert _name(t, "/api") == "api"
    assert _name(t, "/api/") == "api"
    assert _name(t, "/api/x") == "api"
    assert _name(t, "/apix") is None
    assert _name(t, "/api-internal/x") is None


def test_host_exact_then_wildcard_then_any_with_fallthrough() -> None:
    """Exact host > longest wildcard > hostless; a tier without a match falls through."""
    t = _table(
        {"name": "any", "match": {"prefix": "/"}},
        {"name": "wild", "match": {"host": "*.example.com", "prefix": "/"}},
        {"name": "deep", "match": {"host": "*.eu.example.com", "prefix": "/"}},
        {"name": "exact", "match": {"host": "api.example.com", "path": "/only"}},
    )
    assert _name(t, "/only", host="api.example.com") == "exact"
    assert _name(t, "/else", host="api.example.com") == "wild"
    assert _name(t, "/x", host="a.eu.example.com") == "deep"
    assert _name(t, "/x", host="example.com") == "any"
    assert _name(t, "/x", host="evil-example.com") == "any"


def test_route_host_strips_port_case_and_trailing_dot() -> None:
    """Host values are compared lower-case without port or trailing dot."""
    assert route_host(b"API.Example.COM.:8443") == b"api.example.com"
    assert route_host(b"[::1]:80") == b"[::1]"
    assert route_host(b"h") == b"h"


def test_methods_and_header_matchers_filter_candidates() -> None:
    """Method sets and exact/regex/present/absent header matchers must all pass."""
    t = _table(
        {"name": "canary", "match": {"prefix": "/", "headers": [
            {"name": "X-Canary", "exact": "1"}, {"name": "x-ver", "regex": "v[0-9]+"}]}},
        {"name": "authed", "match": {"prefix": "/", "methods": ["POST"],
                                     "headers": [{"name": "authorization", "present": True}]}},
        {"name": "anon-get", "match": {"prefix": "/", "methods": ["GET", "HEAD"],
                                       "headers": [{"name": "authorization", "present": False}]}},
    )
    assert _name(t, "/", headers=[(b"x-canary", b"1"), (b"x-ver", b"v2")]) == "canary"
    assert _name(t, "/", headers=[(b"x-canary", b"1"), (b"x-ver", b"v2x")]) == "anon-get"
    assert _name(t, "/", "POST", headers=[(b"authorization", b"t")]) == "authed"
    assert _name(t, "/", "POST") is None
    assert _name(t, "/", "GET", headers=[(b"authorization", b"t")]) is None


def test_pattern_parameters_are_captured_per_segment() -> None:
    """'{id}' captures exactly one segment and is returned as a parameter."""
    t = _table({"name": "order", "match": {"pattern": "/u/{user}/orders/{id}"}})
    found = t.match(b"h", b"/u/ann/orders/7", b"GET", [])
    assert found is not None and found[1] == {"user": "ann", "id": "7"}
    assert t.match(b"h", b"/u/ann/x/orders/7", b"GET", []) is None
    assert t.match(b"h", b"/u/ann/orders/7/x", b"GET", []) is None


def test_rewrites_strip_prefix_then_regex_and_renormalise() -> None:
    """strip_prefix removes the matched prefix; regex rewrites with groups; result is normal."""
    t = _table(
        {"name": "strip", "match": {"prefix": "/svc/"}, "rewrite": {"strip_prefix": True}},
        {"name": "re", "match": {"prefix": "/v1"},
         "rewrite": {"regex": {"pattern": "^/v1/(\\w+)/(\\d+)$", "replacement": "/\\2/\\1"}}},
        {"name": "dots", "match": {"prefix": "/d"},
         "rewrite": {"regex": {"pattern": "^/d/(.*)$", "replacement": "/a/b/../\\1"}}},
    )
    strip = t.routes[0]
    assert strip.rewrite(b"/svc/users/1") == b"/users/1"
    assert strip.rewrite(b"/svc") == b"/"
    assert t.routes[1].rewrite(b"/v1/items/9") == b"/9/items"
    assert t.routes[1].rewrite(b"/v1/nomatch") == b"/v1/nomatch"
    assert t.routes[2].rewrite(b"/d/x") == b"/a/x"


@pytest.mark.parametrize(
    ("routes", "fragment"),
    [
        ([{"name": "a"}, {"name": "a"}], "duplicate route name 'a'"),
        ([{"name": "p", "match": {"pattern": "/u/{1x}"}}], "identifier"),
        ([{"name": "p", "match": {"pattern": "/u/{id}/{id}"}}], "twice"),
        ([{"name": "p", "match": {"pattern": "/u/{id"}}], "unbalanced"),
        ([{"name": "n", "match": {"prefix": "/a/../b"}}], "not a normalised path"),
        ([{"name": "r", "match": {"prefix": "/"},
           "rewrite": {"regex": {"pattern": "^/(x)$", "replacement": "/\\2"}}}],
         "bad replacement"),
    ],
)
def test_invalid_route_sets_name_route_and_field(routes: list[dict[str, Any]],
                                                 fragment: str) -> None:
    """Compile errors are ConfigErrors naming the route and what is wrong."""
    with pytest.raises(ConfigError, match=fragment) as info:
        _table(*routes)
    assert "'" + routes[-1]["name"] + "'" in str(info.value)


_SEGS = st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=4)


@given(st.lists(_SEGS, min_size=1, max_size=6, unique_by=tuple), _SEGS)
def test_prefix_choice_equals_brute_force_longest(prefixes: list[list[str]],
                                                  path: list[str]) -> None:
    """The chosen prefix route is the longest segment-prefix of the path (first on ties)."""
    routes = [{"name": f"r{i}", "match": {"prefix": "/" + "/".join(p)}}
              for i, p in enumerate(prefixes)]
    t = _table(*routes)
    candidates = [i for i, p in enumerate(prefixes) if path[: len(p)] == p]
    expected = None
    if candidates:
        best = max(len(prefixes[i]) for i in candidates)
        expected = f"r{min(i for i in candidates if len(prefixes[i]) == best)}"
    assert _name(t, "/" + "/".join(path)) == expected
