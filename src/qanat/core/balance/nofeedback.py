"""``NoFeedback``: the ``report``/``done``/``cancel`` of balancers that learn nothing.

A module of its own, apart from ``base`` (whose runtime-checkable protocol mypyc
cannot compile), so that ``RoundRobin``, on the gateway's per-request path, compiles
with it (hatch_build.py).
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from qanat.core.balance.base import EndpointLike


# Compiled; the weighted balancers (interpreted) subclass it too.
@mypyc_attr(allow_interpreted_subclasses=True)
class NoFeedback:
    """Mixin for balancers that learn nothing from outcomes: ``report``/``done`` do nothing."""

    __slots__ = ()

    def report(self, endpoint_id: str, success: bool, latency: float, now: float) -> None:
        """Ignored: this algorithm does not adapt to outcomes."""

    def done(self, endpoint: EndpointLike, success: bool, latency: float, now: float) -> None:
        """Ignored: this algorithm keeps no in-flight counts."""

    def cancel(self, endpoint: EndpointLike) -> None:
        """Ignored: this algorithm keeps no in-flight counts."""
