"""The ``rate_limit`` filter's config (``filters_ratelimit``), validated by pydantic.

A module of its own so that the filter compiles with mypyc (hatch_build.py) while
the pydantic models, which mypyc's code generation cannot handle, stay interpreted:
they are read once per route, when the filter is built.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qanat.core.ratelimit_base import DEFAULT_MAX_KEYS
from qanat.gateway.resilience import Duration

_KINDS = ("route", "remote_addr", "consumer", "subject")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RedisConfig(_Model):
    url: str = Field(pattern=r"^rediss?://")
    prefix: str = Field(default="qanat:rl", min_length=1)
    timeout: Duration = 0.05  # per check, before falling back to the local limiter
    probe_interval: Duration = 1.0


class RateLimitConfig(_Model):
    """``rate`` (+ ``burst``) or ``limit`` per ``window``; see ``filters_ratelimit``."""

    rate: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)  # default: the rate, rounded up
    limit: int | None = Field(default=None, ge=1)
    window: Duration | None = None
    algorithm: Literal["gcra", "token_bucket", "sliding_window"] | None = None
    key: str = "remote_addr"
    redis: RedisConfig | None = None
    policy: str | None = Field(default=None, pattern=r"^[\x20-\x7e]{1,64}$")
    headers: bool = True
    max_keys: int = Field(default=DEFAULT_MAX_KEYS, ge=1)

    @model_validator(mode="after")
    def _valid(self) -> RateLimitConfig:
        if (self.rate is None) == (self.limit is None):
            raise ValueError("give rate (with an optional burst) or limit with window")
        if self.limit is not None and (self.window is None or self.window <= 0):
            raise ValueError("limit needs a window > 0, e.g. window: 1m")
        if self.rate is not None and self.window is not None:
            raise ValueError("window goes with limit, not rate")
        sliding = self.limit is not None
        if self.algorithm is not None and (self.algorithm == "sliding_window") != sliding:
            raise ValueError("sliding_window takes limit/window; gcra and token_bucket take rate")
        if self.redis is not None and sliding:
            raise ValueError("the Redis-shared limit is a GCRA: give rate and burst")
        k = self.key
        if k not in _KINDS and not (k.startswith("header:") and len(k) > 7):
            raise ValueError(f"unknown key {k!r}; use one of {', '.join(_KINDS)}, header:<name>")
        return self


__all__ = ["RateLimitConfig", "RedisConfig"]
