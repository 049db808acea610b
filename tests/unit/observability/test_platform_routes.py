"""The platform routes' cheap rejection matches exactly what Starlette's Route would do."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import Response
from starlette.routing import Route

from qanat.observability.probes import PlatformRoute


async def endpoint(request: Any) -> Response:
    return Response()


segments = st.sampled_from(["health", "ready", "metrics", "healthz", "x", "api", ""])
paths = st.lists(segments, max_size=4).map(lambda parts: "/" + "/".join(parts))


@given(
    route_path=st.sampled_from(["/health", "/ready", "/metrics"]),
    path=paths,
    root=st.sampled_from(["", "/api", "/x/health"]),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    kind=st.sampled_from(["http", "websocket"]),
)
def test_a_platform_route_matches_exactly_like_a_starlette_route(
    route_path: str, path: str, root: str, method: str, kind: str
) -> None:
    """For any path, root path, method and scope type, the verdict and path params agree."""
    plain = Route(route_path, endpoint, methods=["GET"], include_in_schema=False)
    fast = PlatformRoute(route_path, endpoint, methods=["GET"], include_in_schema=False)
    scope = {"type": kind, "path": root + path, "root_path": root, "method": method}
    assert fast.matches(dict(scope)) == plain.matches(dict(scope))
