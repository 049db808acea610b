"""JSON logs (structlog) that carry the service, instance, trace and request ids.

One line per event, one JSON object per line, on stderr (``qanat up`` writes
each instance's stderr to ``.qanat/logs/<instance>.log``). Both structlog
loggers and the standard ``logging`` module (uvicorn, libraries) end up in
the same format, so every line of a request can be found by its
``request_id`` or joined to its trace by ``trace_id``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

from qanat.observability import context

Processor = Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]


def add_request_context(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current request id, trace id and span id, when there are some."""
    rid = context.request_id.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event.setdefault("trace_id", format(span.trace_id, "032x"))
        event.setdefault("span_id", format(span.span_id, "016x"))
    return event


def _static_fields(**fields: str) -> Processor:
    # Static fields, not contextvars: a contextvar bound while the app starts is
    # not visible in the tasks the server creates for requests.
    def add(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in fields.items():
            event.setdefault(key, value)
        return event

    return add


def configure_logging(
    service: str,
    instance: str,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging to one JSON line per event on ``stream``.

    ``stream`` defaults to ``sys.stderr`` at the time of the call. The root
    logger gets this one handler: any handler installed before (by an earlier
    call, or by the app) is replaced, since it would print every line twice.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _static_fields(service=service, instance=instance),
        add_request_context,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # a second configure must reach existing loggers
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
