"""The route table: compiled once per route set, matched per request. Pure.

Precedence (documented in docs/gateway.md):

1. Host tier: routes for the exact host, then ``*.suffix`` wildcards (longest
   suffix first), then routes without a host. A tier with no matching route
   falls through to the next.
2. Within a tier: exact ``path`` > ``pattern`` > longest ``prefix``; ties go to
   the route declared first.
3. A candidate must also accept the method and every header matcher; if not,
   the next candidate is tried.

Lookups are dictionary hits: exact paths by key, prefixes by walking the
path's ancestors (``/a/b/c``, ``/a/b``, ``/a``, ``/``), so a match costs
O(segments + patterns), not O(routes). Prefixes match whole segments
(``/api`` takes ``/api`` and ``/api/x``, never ``/apix``), the choice
Envoy's ``path_separated_prefix`` makes, because the plain string prefix is a
classic way to expose ``/api-internal`` by accident.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from qanat.errors import ConfigError
from qanat.gateway.config import HeaderMatch, RouteConfig
from qanat.gateway.headers import HeaderEdit
from qanat.gateway.normalize import normalize_path

HeaderList = list[tuple[bytes, bytes]]
_PARAM = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class _HeaderMatcher:
    name: bytes
    exact: bytes | None
    regex: re.Pattern[bytes] | None
    present: bool | None

    def accepts(self, headers: HeaderList) -> bool:
        for name, value in headers:
            if name == self.name:
                if self.present is not None:
                    return self.present
                if self.exact is not None:
                    if value == self.exact:
                        return True
                elif self.regex is not None and self.regex.fullmatch(value):
                    return True
        return self.present is False


@dataclass(eq=False, slots=True)
class Route:
    """A compiled route: ``index`` is its declaration order, ``config`` its source."""

    index: int
    config: RouteConfig
    methods: frozenset[bytes] | None
    header_matchers: tuple[_HeaderMatcher, ...]
    regex: re.Pattern[bytes] | None
    strip: bytes | None
    rewrite_regex: tuple[re.Pattern[bytes], bytes] | None
    host_rewrite: bytes | None
    request_edit: HeaderEdit
    response_edit: HeaderEdit

    @property
    def name(self) -> str:
        return self.config.name

    def accepts(self, method: bytes, headers: HeaderList) -> bool:
        """True when the method and every header matcher accept the request."""
        if self.methods is not None and method not in self.methods:
            return False
        if not self.header_matchers:
            return True  # the common route: no generator to build per request
        return all(m.accepts(headers) for m in self.header_matchers)

    def rewrite(self, path: bytes) -> bytes:
        """The path to forward: strip the prefix, apply the regex, re-normalise."""
        if self.strip is None and self.rewrite_regex is None:
            return path
        if self.strip is not None:
            path = path[len(self.strip) :] or b"/"
        if self.rewrite_regex is not None:
            regex, repl = self.rewrite_regex
            path = regex.sub(repl, path, count=1)
        if not path.startswith(b"/"):
            path = b"/" + path
        return normalize_path(path)


@dataclass(slots=True)
class _Tier:
    exact: dict[bytes, list[Route]] = field(default_factory=dict)
    patterns: list[Route] = field(default_factory=list)
    prefixes: dict[bytes, list[Route]] = field(default_factory=dict)

    def match(
        self, path: bytes, method: bytes, headers: HeaderList
    ) -> tuple[Route, dict[str, str]] | None:
        for route in self.exact.get(path, ()):
            if route.accepts(method, headers):
                return route, {}
        for route in self.patterns:
            assert route.regex is not None
            m = route.regex.fullmatch(path)
            if m is not None and route.accepts(method, headers):
                return route, {k: v.decode("latin-1") for k, v in m.groupdict().items()}
        if not self.prefixes:
            return None
        p = path[:-1] if len(path) > 1 and path.endswith(b"/") else path
        while True:
            for route in self.prefixes.get(p, ()):
                if route.accepts(method, headers):
                    return route, {}
            if p == b"/":
                return None
            p = p[: p.rfind(b"/")] or b"/"


class RouteTable:
    """An immutable, compiled route set. Build with ``compile_routes``."""

    __slots__ = ("_any", "_hosts", "_wildcards", "routes")

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._hosts: dict[bytes, _Tier] = {}
        wild: dict[bytes, _Tier] = {}
        self._any = _Tier()
        for route in self.routes:
            host = route.config.match.host
            if host is None:
                tier = self._any
            elif host.startswith("*."):
                tier = wild.setdefault(host[1:].encode(), _Tier())  # ".example.com"
            else:
                tier = self._hosts.setdefault(host.encode(), _Tier())
            _add(tier, route)
        self._wildcards = sorted(wild.items(), key=lambda kv: -len(kv[0]))

    def match(
        self, host: bytes, path: bytes, method: bytes, headers: HeaderList
    ) -> tuple[Route, dict[str, str]] | None:
        """The winning route and its pattern parameters, or None (404).

        ``host`` must be lower-case without a port (see ``route_host``), ``path``
        normalised, ``headers`` with lower-case names.
        """
        tier = self._hosts.get(host)
        if tier is not None:
            found = tier.match(path, method, headers)
            if found is not None:
                return found
        for suffix, tier in self._wildcards:
            if host.endswith(suffix):
                found = tier.match(path, method, headers)
                if found is not None:
                    return found
        return self._any.match(path, method, headers)


def _add(tier: _Tier, route: Route) -> None:
    m = route.config.match
    if m.path is not None:
        tier.exact.setdefault(m.path.encode(), []).append(route)
    elif m.pattern is not None:
        tier.patterns.append(route)
    else:
        prefix = (m.prefix or "/").encode()
        if len(prefix) > 1:
            prefix = prefix.rstrip(b"/") or b"/"
        tier.prefixes.setdefault(prefix, []).append(route)


_HOSTS: dict[bytes, bytes] = {}  # Host value -> route_host(value); a gateway sees few


def route_host(authority: bytes) -> bytes:
    """The host part of a Host value, lower-cased, without port or trailing dot."""
    host = _HOSTS.get(authority)
    if host is not None:
        return host
    if authority.startswith(b"["):
        host = authority[: authority.find(b"]") + 1].lower()
    else:
        colon = authority.rfind(b":")
        host = (authority[:colon] if colon >= 0 else authority).rstrip(b".").lower()
    if len(_HOSTS) < 1024:  # clients choose Host: bound what they can make us keep
        _HOSTS[authority] = host
    return host


def compile_routes(configs: Sequence[RouteConfig]) -> RouteTable:
    """Compile a route set; a ConfigError names the route and the field at fault."""
    seen: dict[str, int] = {}
    routes = []
    for i, cfg in enumerate(configs):
        if cfg.name in seen:
            raise ConfigError(
                f"duplicate route name {cfg.name!r} (routes[{seen[cfg.name]}] and routes[{i}]); "
                "route names must be unique",
                source=f"routes[{i}].name",
            )
        seen[cfg.name] = i
        routes.append(_compile(i, cfg))
    return RouteTable(routes)


def _compile(index: int, cfg: RouteConfig) -> Route:
    where = f"route {cfg.name!r} (routes[{index}])"
    m = cfg.match
    for field_name, value in (("path", m.path), ("prefix", m.prefix), ("pattern", m.pattern)):
        if value is not None and field_name != "pattern":
            try:
                normal = normalize_path(value.encode()).decode()
            except Exception as exc:
                raise ConfigError(f"{exc}", source=f"{where}.match.{field_name}") from None
            if normal != value:
                raise ConfigError(
                    f"{value!r} is not a normalised path (it would never match); use {normal!r}",
                    source=f"{where}.match.{field_name}",
                )
    regex = _compile_pattern(m.pattern, where) if m.pattern is not None else None
    rw = cfg.rewrite
    rewrite_regex = None
    if rw.regex is not None:
        compiled = re.compile(rw.regex.pattern.encode())
        try:
            compiled.sub(rw.regex.replacement.encode(), b"/")  # checks group references
        except (re.error, IndexError) as exc:
            raise ConfigError(
                f"bad replacement {rw.regex.replacement!r}: {exc}",
                source=f"{where}.rewrite.regex.replacement",
            ) from None
        rewrite_regex = (compiled, rw.regex.replacement.encode())
    strip = None
    if rw.strip_prefix and m.prefix is not None and m.prefix != "/":
        strip = m.prefix.rstrip("/").encode()
    return Route(
        index=index,
        config=cfg,
        methods=None if m.methods is None else frozenset(x.encode() for x in m.methods),
        header_matchers=tuple(_header_matcher(h) for h in m.headers),
        regex=regex,
        strip=strip,
        rewrite_regex=rewrite_regex,
        host_rewrite=None if rw.host is None else rw.host.encode(),
        request_edit=HeaderEdit.from_ops(cfg.headers.request),
        response_edit=HeaderEdit.from_ops(cfg.headers.response),
    )


def _header_matcher(h: HeaderMatch) -> _HeaderMatcher:
    return _HeaderMatcher(
        name=h.name.encode(),
        exact=None if h.exact is None else h.exact.encode(),
        regex=None if h.regex is None else re.compile(h.regex.encode()),
        present=h.present,
    )


def _compile_pattern(pattern: str, where: str) -> re.Pattern[bytes]:
    """``/users/{id}/orders/{order}`` -> a regex with one named group per segment."""
    source = f"{where}.match.pattern"
    out, pos, names = [], 0, set()
    for m in _PARAM.finditer(pattern):
        name = m.group(1)
        if not name.isidentifier():
            raise ConfigError(f"parameter {{{name}}} must be an identifier", source=source)
        if name in names:
            raise ConfigError(f"parameter {{{name}}} appears twice", source=source)
        names.add(name)
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{name}>[^/]+)")
        pos = m.end()
    rest = pattern[pos:]
    if "{" in rest or "}" in rest or any("{" in p or "}" in p for p in out[::2]):
        raise ConfigError("unbalanced '{' or '}'; write parameters as {name}", source=source)
    out.append(re.escape(rest))
    return re.compile("".join(out).encode())


__all__ = ["Route", "RouteTable", "compile_routes", "route_host"]
