"""The ``upstream`` block of a gateway route: targets, balancer, hashing, breakers, canary.

Split from ``config.py`` (which re-exports every name here). An upstream is
``kind: static`` (weighted ``http://host:port`` targets) or ``kind: service``
(resolved through discovery), plus:

- ``balancer``: any ``qanat.core.balance`` name (``round_robin`` by default);
- ``hash_on`` (only with ``balancer: consistent_hash``): what a request's hash
  key is — ``{header: x-user-id}``, ``{cookie: session}`` or ``{source:
  client_address}`` — and ``hash_balance_factor`` for bounded loads
  (Envoy's and HAProxy's name: 150 = no instance takes more than 1.5 x the
  average in-flight load; Mirrokni et al., "Consistent Hashing with Bounded
  Loads", 2017);
- ``breaker``, ``outlier_detection`` (``resilience.py``) and canary
  ``subsets`` with a weighted ``split`` and ``subset_rules``
  (``filters_traffic.py``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qanat.gateway.filters_traffic import Subset, SubsetRule
from qanat.gateway.resilience import BreakerConfig, OutlierConfig

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
HASHING = "consistent_hash"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Target(_Strict):
    """A static upstream endpoint: ``http://host:port``, a weight, and a version and tags
    for subsets (as ``qanat.ports.Instance`` carries them)."""

    url: str
    weight: int = Field(default=1, ge=1, le=1000)
    version: str = ""
    tags: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected 'http://host:port', got {value!r} (https is not supported)")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"a target URL is only scheme, host and port, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80


class HashOn(_Strict):
    """The request attribute a ``consistent_hash`` balancer hashes: exactly one of
    ``header`` (its first value), ``cookie`` (its value) or ``source: client_address``
    (the connection's peer address). A request without it gets a random instance,
    as Envoy does when its hash policy yields no hash."""

    header: str | None = None
    cookie: str | None = None
    source: Literal["client_address"] | None = None

    @field_validator("header", "cookie")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.match(value):
            raise ValueError(f"{value!r} is not a valid header or cookie name")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> HashOn:
        given = [k for k in ("header", "cookie", "source") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of header, cookie, source "
                             f"(got {', '.join(given) or 'none'}), e.g. {{header: x-user-id}}")
        return self


class _UpstreamBase(_Strict):
    balancer: str = "round_robin"
    hash_on: HashOn | None = None  # the key for balancer: consistent_hash
    hash_balance_factor: int | None = Field(default=None, gt=100, le=10_000)  # percent
    breaker: BreakerConfig | None = None  # one circuit breaker per instance
    outlier_detection: OutlierConfig | None = None
    subsets: dict[str, Subset] = Field(default_factory=dict)
    split: dict[str, int] = Field(default_factory=dict)  # subset -> weight, exact per cycle
    subset_rules: list[SubsetRule] = Field(default_factory=list)  # checked before split
    subset_fallback: bool = True  # an empty subset borrows every instance (else 503)

    @model_validator(mode="after")
    def _subsets(self) -> _UpstreamBase:
        named = [*self.split, *(r.subset for r in self.subset_rules)]
        unknown = sorted({n for n in named if n not in self.subsets})
        if unknown:
            raise ValueError(f"unknown subset(s) {unknown}; define them under 'subsets'")
        if any(not 0 <= w <= 1000 for w in self.split.values()):
            raise ValueError("split weights must be between 0 and 1000")
        if self.split and not sum(self.split.values()):
            raise ValueError("split weights must not all be 0")
        return self

    @model_validator(mode="after")
    def _hashing(self) -> _UpstreamBase:
        hashing = self.balancer == HASHING
        if hashing and self.hash_on is None:
            raise ValueError("balancer consistent_hash needs hash_on: {header: NAME}, "
                             "{cookie: NAME} or {source: client_address}")
        if not hashing and self.hash_on is not None:
            raise ValueError(f"hash_on only works with balancer: {HASHING} "
                             f"(this upstream uses {self.balancer!r})")
        if not hashing and self.hash_balance_factor is not None:
            raise ValueError(f"hash_balance_factor only works with balancer: {HASHING}")
        return self

    @property
    def balancer_options(self) -> dict[str, float]:
        """Keyword options for ``make_balancer`` (bounded loads' epsilon)."""
        if self.hash_balance_factor is None:
            return {}
        return {"epsilon": self.hash_balance_factor / 100 - 1}


class StaticUpstream(_UpstreamBase):
    kind: Literal["static"]
    targets: list[Target] = Field(min_length=1)


class ServiceUpstream(_UpstreamBase):
    kind: Literal["service"]
    service: str = Field(min_length=1)


Upstream = Annotated[StaticUpstream | ServiceUpstream, Field(discriminator="kind")]


__all__ = ["HashOn", "ServiceUpstream", "StaticUpstream", "Target", "Upstream"]
