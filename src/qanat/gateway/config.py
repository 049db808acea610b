"""The route model: what a gateway route says, validated strictly (pydantic v2).

A route = ``name`` + ``match`` (host, one of path|prefix|pattern, methods,
headers) + ``upstream`` (``kind: static`` with weighted URLs, or
``kind: service`` resolved through discovery) + optional ``rewrite``,
``headers`` (request/response add, set, remove), ``timeout`` /
``per_try_timeout``, ``retry``, ``max_concurrent``, ``buffer_response_bytes``
and ``filters`` (named
filter configs, see ``qanat.gateway.filters``). The ``upstream`` block
(``config_upstream.py``) may add ``hash_on`` for consistent hashing, a
per-instance ``breaker``, ``outlier_detection`` and canary ``subsets`` with a
weighted ``split`` and header/cookie ``subset_rules``. ``docs/gateway.md`` and
``docs/gateway-traffic.md`` have YAML examples.

Everything is checked on load; a ``ConfigError`` names the route, the field
and, for files, the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from qanat import _yaml
from qanat.core.duration import parse_duration
from qanat.errors import ConfigError
from qanat.gateway.config_upstream import (
    HashOn,
    ServiceUpstream,
    StaticUpstream,
    Target,
    Upstream,
)
from qanat.gateway.filters_traffic import Subset, SubsetRule
from qanat.gateway.resilience import RetryConfig

Duration = Annotated[float, BeforeValidator(parse_duration)]
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$")
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


class HeaderMatch(_Strict):
    """One header condition: ``exact`` value, ``regex`` (full match) or ``present``."""

    name: str
    exact: str | None = None
    regex: str | None = None
    present: bool | None = None  # true: must be present; false: must be absent

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"{value!r} is not a valid header name")
        return value.lower()

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return None if value is None else _check_regex(value)

    @model_validator(mode="after")
    def _one_condition(self) -> HeaderMatch:
        given = [k for k in ("exact", "regex", "present") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of exact, regex, present (got {given or 'none'})")
        return self


class Match(_Strict):
    """Which requests a route takes. Exactly one of path, prefix, pattern (default prefix '/')."""

    host: str | None = None  # "api.example.com" or "*.example.com"; ports are ignored
    path: str | None = None  # exact path
    prefix: str | None = None  # whole segments: "/api" takes /api and /api/..., not /apix
    pattern: str | None = None  # "/api/users/{id}": each {name} is one path segment
    methods: list[str] | None = None
    headers: list[HeaderMatch] = Field(default_factory=list)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.lower().rsplit(":", 1)[0] if value.count(":") == 1 else value.lower()
        if not _HOST.match(host):
            raise ValueError(f"{value!r} is not a host name or '*.suffix' wildcard")
        return host

    @field_validator("path", "prefix", "pattern")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("an empty method list matches nothing; omit it to match any method")
        for m in value:
            if not _TOKEN.match(m) or m != m.upper():
                raise ValueError(f"{m!r} is not an upper-case HTTP method")
        return value

    @model_validator(mode="after")
    def _one_path(self) -> Match:
        given = [k for k in ("path", "prefix", "pattern") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of path, prefix, pattern (got {', '.join(given)})")
        return self


class RegexRewrite(_Strict):
    pattern: str
    replacement: str  # may use \1 or \g<name>

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        return _check_regex(value)


class Rewrite(_Strict):
    """Path and host rewrites, applied in this order: strip_prefix, regex, then host."""

    strip_prefix: bool = False  # only with match.prefix
    regex: RegexRewrite | None = None
    host: str | None = None  # replaces the Host sent upstream


class HeaderOps(_Strict):
    """Header edits: ``remove`` first, then ``set`` (replace), then ``add`` (append)."""

    add: dict[str, str] = Field(default_factory=dict)
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid(self) -> HeaderOps:
        for name in [*self.add, *self.set, *self.remove]:
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
        for name, value in [*self.add.items(), *self.set.items()]:
            if not _FIELD_VALUE.match(value):
                raise ValueError(f"the value for {name!r} has control or non-ASCII characters")
        return self


class Headers(_Strict):
    request: HeaderOps = HeaderOps()
    response: HeaderOps = HeaderOps()


class FilterSpec(_Strict):
    """A named filter and its options, e.g. ``{name: rate_limit, config: {rate: 100}}``."""

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class RouteConfig(_Strict):
    """One gateway route. ``timeout`` covers the whole exchange until the response
    head (all tries and backoff); ``per_try_timeout`` bounds one try (defaults to
    ``timeout``); ``retry`` (none: never retried) and ``max_concurrent``
    (requests in flight on the route, beyond which it answers 503; none: no limit)
    are in ``docs/gateway-traffic.md``."""

    name: str = Field(min_length=1, max_length=128)
    match: Match = Match()
    upstream: Upstream
    rewrite: Rewrite = Rewrite()
    headers: Headers = Headers()
    timeout: Duration = 15.0
    per_try_timeout: Duration | None = None
    retry: RetryConfig | None = None
    max_concurrent: int | None = Field(default=None, ge=1)
    # A response of at most this many bytes (by Content-Length) is read whole before
    # its head goes to the client, so a try cut mid-body can still be retried (0: never).
    buffer_response_bytes: int = Field(default=64 * 1024, ge=0, le=1 << 20)
    filters: list[FilterSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        if self.rewrite.strip_prefix and self.match.prefix is None:
            raise ValueError("rewrite.strip_prefix needs match.prefix")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        if self.per_try_timeout is not None and not 0 < self.per_try_timeout <= self.timeout:
            raise ValueError("per_try_timeout must be > 0 and at most timeout")
        return self


def parse_routes(
    routes: Sequence[RouteConfig | Mapping[str, Any]], source: str = "routes"
) -> list[RouteConfig]:
    """Validate raw route mappings; a ConfigError names the route and the field."""
    out: list[RouteConfig] = []
    for i, raw in enumerate(routes):
        if isinstance(raw, RouteConfig):
            out.append(raw)
            continue
        doc = _yaml.LocatedDocument(raw, {}, source)
        out.append(_validate_route(doc, (), i, raw))
    return out


def _validate_route(doc: _yaml.LocatedDocument, at: _yaml.Loc, i: int, raw: Any) -> RouteConfig:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    label = f"route {name!r} (routes[{i}])" if name else f"routes[{i}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: a route is a mapping, got {type(raw).__name__}",
                          source=doc.source)
    try:
        return _yaml.validate(RouteConfig, doc, at=at)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc.reason}") from None


def load_gateway_file(path: str | Path) -> tuple[list[RouteConfig], dict[str, Any]]:
    """Read a gateway YAML file: a ``routes:`` list and an optional ``limits:`` mapping."""
    doc = _yaml.load(path)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("routes"), list):
        raise ConfigError("expected a mapping with a 'routes:' list", source=doc.source)
    unknown = set(data) - {"routes", "limits"}
    if unknown:
        raise ConfigError(f"unknown top-level keys {sorted(unknown)}; allowed: routes, limits",
                          source=doc.source)
    routes = [
        _validate_route(doc, ("routes", i), i, raw) for i, raw in enumerate(data["routes"])
    ]
    limits = data.get("limits") or {}
    if not isinstance(limits, dict):
        raise ConfigError("'limits' must be a mapping", source=doc.where(("limits",)))
    return routes, limits


__all__ = [
    "FilterSpec",
    "HashOn",
    "HeaderMatch",
    "HeaderOps",
    "Headers",
    "Match",
    "RegexRewrite",
    "Rewrite",
    "RouteConfig",
    "ServiceUpstream",
    "StaticUpstream",
    "Subset",
    "SubsetRule",
    "Target",
    "Upstream",
    "load_gateway_file",
    "parse_routes",
]
