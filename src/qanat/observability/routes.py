"""Route templates for metric labels and span names: ``/users/{id}``, never ``/users/42``.

Starlette leaves the innermost matched route in ``scope["route"]``; under a
``Mount`` that route's path is relative to the mount. ``RouteTemplates``
finds the route in the app's route tree once (by identity) and remembers the
full template, so a request costs one dict lookup. A request that matched no
route gets the fixed label ``UNMATCHED``: label values stay bounded whatever
paths clients send (Prometheus naming guidelines, "labels").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

UNMATCHED = "<unmatched>"
"""The route label of a request no route matched (404, redirects)."""


_CONVERTOR = re.compile(r"{([^}:]+):[^}]*}")


def _own_path(route: Any) -> str:
    # The declared path without convertors: "/items/{id:int}" -> "/items/{id}". (A Mount's
    # path_format would add "/{path}", so use its declared path.)
    return _CONVERTOR.sub(r"{\1}", str(getattr(route, "path", "") or ""))


def find_template(routes: Iterable[Any], target: Any, prefix: str = "") -> str | None:
    """The full template of ``target`` within ``routes`` (searching mounts), or None."""
    for route in routes:
        if route is target:
            return prefix + _own_path(route)
        children = getattr(route, "routes", None)
        if children:
            found = find_template(children, target, prefix + _own_path(route))
            if found is not None:
                return found
    return None


class RouteTemplates:
    """Maps the route Starlette matched to its bounded label, with a cache per route."""

    def __init__(self, routes: Iterable[Any]) -> None:
        self._routes = routes
        self._cache: dict[int, tuple[Any, str]] = {}  # id(route) -> (route, template)

    def label(self, route: Any) -> str:
        """``route``'s full template; ``UNMATCHED`` when ``route`` is None."""
        if route is None:
            return UNMATCHED
        hit = self._cache.get(id(route))
        if hit is not None and hit[0] is route:
            return hit[1]
        template = find_template(self._routes, route) or _own_path(route) or UNMATCHED
        if len(self._cache) < 10_000:  # routes are finite; the bound guards against churn
            self._cache[id(route)] = (route, template)
        return template
