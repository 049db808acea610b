"""Keeping a framework's own request tracing out of the way of qanat's server span.

FastAPI versions with built-in telemetry open, for every request once a
global tracer provider exists, a SERVER span of their own and three
INTERNAL "operation" spans (``fastapi.dependencies``, ``fastapi.endpoint``,
``fastapi.serialization``). qanat's middleware already makes the request's
server span (W3C parent, route template, status), so those four spans would
be a second description of the same request at four times the cost: each
span is created, ended, queued and written to the span store.

FastAPI itself steps aside when OpenTelemetry's ASGI middleware is in the
app's stack (its ``_legacy_otel`` check); ``defer_fastapi_tracing`` makes it
step aside for qanat's the same way, through the setting its public
``FastAPI(telemetry={"tracing": False})`` option writes. Its metrics and
logs (active only with an OpenTelemetry meter or logger provider) are left
alone. Spans an app opens itself with ``trace.get_tracer`` still nest under
qanat's server span.
"""

from __future__ import annotations

from typing import Any


def defer_fastapi_tracing(app: Any) -> bool:
    """Turn off FastAPI's built-in request tracing on ``app``; True when there was some.

    A no-op (False) for Starlette apps and for FastAPI versions without
    built-in telemetry, so it is safe to call on any ASGI app.
    """
    # The dict FastAPI(telemetry=...) merges into; NativeTelemetry reads the same
    # object on every request, so a change here applies from the next request on.
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or not config.get("tracing"):
        return False
    config["tracing"] = False
    return True
