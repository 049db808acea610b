"""JSON logs: one object per line with service, instance, request and trace ids."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import use_span

from qanat.observability import context
from qanat.observability.logging import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger; put it back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_stdlib_and_structlog_lines_share_one_json_format() -> None:
    """A stdlib logger and a structlog logger both print JSON with service and instance."""
    out = io.StringIO()
    configure_logging("users", "users-0", stream=out)
    logging.getLogger("lib").warning("disk %s", "full")
    structlog.get_logger("app").info("order placed", order_id=7)
    first, second = lines(out)
    assert (first["event"], first["level"], first["logger"]) == ("disk full", "warning", "lib")
    assert (second["event"], second["order_id"], second["level"]) == ("order placed", 7, "info")
    for line in (first, second):
        assert (line["service"], line["instance"]) == ("users", "users-0")
        assert "timestamp" in line
        assert "request_id" not in line and "trace_id" not in line


def test_request_and_trace_ids_are_added_inside_a_request() -> None:
    """With a request id and a current span, each line carries request_id, trace_id, span_id."""
    out = io.StringIO()
    configure_logging("users", "users-0", stream=out)
    span = TracerProvider().get_tracer("t").start_span("work")
    token = context.request_id.set("req-1")
    try:
        with use_span(span, end_on_exit=True):
            logging.getLogger("app").info("inside")
    finally:
        context.request_id.reset(token)
    [line] = lines(out)
    assert line["request_id"] == "req-1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


async def test_service_fields_reach_tasks_started_elsewhere() -> None:
    """Service and instance appear in lines logged from a context created before configuring
    (as the server's request tasks are), not only in the configuring task."""
    out = io.StringIO()
    before = contextvars.copy_context()  # like a server protocol made before the app started
    configure_logging("users", "users-0", stream=out)
    loop = asyncio.get_running_loop()
    task = loop.create_task(_log_once(), context=before)
    await task
    [line] = lines(out)
    assert (line["service"], line["instance"]) == ("users", "users-0")


async def _log_once() -> None:
    logging.getLogger("req").info("from another context")


def test_exceptions_are_rendered_into_the_line() -> None:
    """logger.exception puts the traceback into the JSON object, on one line."""
    out = io.StringIO()
    configure_logging("users", "users-0", stream=out)
    try:
        raise ValueError("bad input")
    except ValueError:
        logging.getLogger("app").exception("failed")
    [line] = lines(out)
    assert "ValueError: bad input" in str(line["exception"])
