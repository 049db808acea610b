"""Traffic shaping: canary subsets (weighted split, header/cookie rules) and fault injection.

Canary (APISIX ``traffic-split``, Istio ``VirtualService`` subsets): an
upstream names ``subsets`` of its instances by ``version`` and/or ``tags``;
``subset_rules`` send matching requests (a header or a cookie) to one subset,
and every other request follows the weighted ``split``. The split is nginx's
smooth weighted round robin over the subsets, so each cycle of
``sum(weights) / gcd`` requests holds *exactly* each subset's share (90/10:
exactly 10 of every 100), spread out rather than in bursts. ``SubsetChooser``
is that decision, pure; ``upstream.Upstream`` uses it.

Fault injection (Envoy's HTTP fault filter, APISIX ``fault-injection``), the
``fault`` filter: delay a percentage of requests and/or abort a percentage
with a status, optionally only for requests carrying a header, never more
than ``max_active_faults`` at once. The delay is decided first, then the
abort, each with its own draw from ``rng`` (seedable for tests).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qanat.core.balance import Endpoint, SmoothWeightedRoundRobin
from qanat.gateway.filter_config import filter_config
from qanat.gateway.filters import Exchange, HeaderList, HookFilter, Reply, register_filter
from qanat.gateway.problem import problem
from qanat.gateway.resilience import Duration

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Subset(_Model):
    """The instances with this ``version`` (when given) and every one of ``tags``."""

    version: str | None = None
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> Subset:
        if self.version is None and not self.tags:
            raise ValueError("a subset needs a version or tags")
        return self

    def contains(self, version: str, tags: Sequence[str]) -> bool:
        """Whether an instance with ``version`` and ``tags`` belongs here."""
        if self.version is not None and version != self.version:
            return False
        return all(t in tags for t in self.tags)


class SubsetRule(_Model):
    """Requests whose ``header`` (or ``cookie``) matches go to ``subset``.

    ``exact`` value, ``regex`` (full match), or neither: present with any value.
    """

    subset: str
    header: str | None = None
    cookie: str | None = None
    exact: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> SubsetRule:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("give one of header or cookie")
        if self.header is not None and not _TOKEN.match(self.header):
            raise ValueError(f"{self.header!r} is not a valid header name")
        if self.exact is not None and self.regex is not None:
            raise ValueError("give exact or regex, not both")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.regex!r}: {exc}") from None
        return self


def cookie(headers: HeaderList, name: bytes) -> bytes | None:
    """The first value of cookie ``name`` across the ``Cookie`` headers (RFC 6265 §5.4)."""
    for k, v in headers:
        if k == b"cookie":
            for item in v.split(b";"):
                key, sep, value = item.strip().partition(b"=")
                if sep and key.strip() == name:
                    return value.strip().strip(b'"')
    return None


class _Rule:
    __slots__ = ("cookie", "exact", "header", "regex", "subset")

    def __init__(self, rule: SubsetRule) -> None:
        self.subset = rule.subset
        self.header = rule.header.lower().encode() if rule.header else None
        self.cookie = rule.cookie.encode() if rule.cookie else None
        self.exact = rule.exact.encode() if rule.exact is not None else None
        self.regex = re.compile(rule.regex.encode()) if rule.regex is not None else None

    def matches(self, headers: HeaderList) -> bool:
        if self.cookie is not None:
            values = [c] if (c := cookie(headers, self.cookie)) is not None else []
        else:
            values = [v for k, v in headers if k == self.header]
        for value in values:
            if self.exact is not None:
                if value == self.exact:
                    return True
            elif self.regex is not None:
                if self.regex.fullmatch(value):
                    return True
            else:
                return True
        return False


class SubsetChooser:
    """Which subset a request goes to: the first matching rule, else the weighted split.

    ``choose(headers)`` returns a subset name, or None (no rule matched and
    no split: any instance). Pure; one event loop.
    """

    __slots__ = ("_rules", "_split")

    def __init__(self, split: Mapping[str, int], rules: Sequence[SubsetRule]) -> None:
        self._rules = [_Rule(r) for r in rules]
        weighted = [Endpoint(name, weight) for name, weight in split.items() if weight > 0]
        self._split = SmoothWeightedRoundRobin(weighted) if weighted else None

    def choose(self, headers: HeaderList) -> str | None:
        for rule in self._rules:
            if rule.matches(headers):
                return rule.subset
        if self._split is None:
            return None
        chosen = self._split.pick()
        return chosen.id if chosen is not None else None


class Abort(_Model):
    status: int = Field(ge=200, le=599)
    percentage: float = Field(default=100.0, ge=0, le=100)


class Delay(_Model):
    duration: Duration
    percentage: float = Field(default=100.0, ge=0, le=100)


class FaultConfig(_Model):
    """The ``fault`` filter's config; see the module docstring."""

    abort: Abort | None = None
    delay: Delay | None = None
    header: str | None = None  # only requests carrying this header ...
    value: str | None = None  # ... with this exact value (any value when omitted)
    max_active_faults: int | None = Field(default=None, ge=0)
    seed: int | None = None  # a fixed seed makes the draws reproducible

    @model_validator(mode="after")
    def _valid(self) -> FaultConfig:
        if self.abort is None and self.delay is None:
            raise ValueError("give abort, delay or both")
        if self.value is not None and self.header is None:
            raise ValueError("value needs header")
        if self.header is not None and not _TOKEN.match(self.header):
            raise ValueError(f"{self.header!r} is not a valid header name")
        return self


class FaultFilter(HookFilter):
    """Injects delays and aborts; ``rng`` returns floats in [0, 1), ``sleep`` waits."""

    def __init__(
        self,
        config: FaultConfig,
        route: str,
        *,
        rng: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.route = route
        self._rng = rng or random.Random(config.seed).random
        self._sleep = sleep
        self._header = config.header.lower().encode() if config.header else None
        self._value = config.value.encode() if config.value is not None else None
        self.active = 0
        self.delayed = self.aborted = self.overflow = 0

    def _applies(self, headers: HeaderList) -> bool:
        if self._header is None:
            return True
        return any(k == self._header and (self._value is None or v == self._value)
                   for k, v in headers)

    def on_request(self, ex: Exchange) -> Reply | Awaitable[Reply | None] | None:
        c = self.config
        if not self._applies(ex.headers):
            return None
        delay = c.delay is not None and self._rng() * 100.0 < c.delay.percentage
        abort = c.abort is not None and self._rng() * 100.0 < c.abort.percentage
        if not (delay or abort):
            return None
        if c.max_active_faults is not None and self.active >= c.max_active_faults:
            self.overflow += 1  # Envoy's faults_overflow: the request passes untouched
            return None
        if delay:
            return self._delayed(ex, abort)
        return self._abort(ex)

    async def _delayed(self, ex: Exchange, abort: bool) -> Reply | None:
        c = self.config
        self.active += 1  # an active fault is one being waited out
        try:
            assert c.delay is not None
            self.delayed += 1
            await self._sleep(c.delay.duration)
            return self._abort(ex) if abort else None
        finally:
            self.active -= 1

    def _abort(self, ex: Exchange) -> Reply:
        c = self.config
        assert c.abort is not None
        self.aborted += 1
        return problem(c.abort.status, f"route {self.route!r}: fault injected (abort)",
                       ex.request_id, slug="fault-injected")


def fault_filter(config: Mapping[str, Any], route: str) -> FaultFilter:
    """The ``fault`` filter factory (registered on import)."""
    return FaultFilter(filter_config(FaultConfig, config), route)


register_filter("fault", fault_filter)

__all__ = ["FaultConfig", "FaultFilter", "Subset", "SubsetChooser", "SubsetRule", "cookie",
           "fault_filter"]
