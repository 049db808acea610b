"""The gateway's access log: one JSON object per request, one line each.

::

    {"time":"2024-05-01T12:00:00.123Z","request_id":"3f2a...","client":"10.0.0.7",
     "method":"GET","path":"/api/users/7","route":"users","upstream":"users",
     "instance":"10.0.0.5:8001","status":200,"bytes":512,"duration_ms":1.234,
     "error":null}

``time`` is when the request was routed (UTC); ``path`` the normalised path
(the raw target, query cut, when the request was refused before routing);
``upstream`` the service or ``static``; ``instance`` the ``host:port`` that
answered (empty if none was tried); ``bytes`` the response body as written;
``duration_ms`` until its last byte; ``error`` the upstream error kind
(``metrics.error_kind``) or null.

Kept cheap: the line is one ``%``-format of fields that are already strings
(escaping only when a value needs it), the timestamp's seconds part is
formatted once per second, and lines are batched — written once per event
loop turn, or at 64 KiB — instead of one ``write`` per request. Writes to a
pipe (stderr under ``qanat up``) go in pieces of at most ``PIPE_BUF`` cut at
line ends, so the lines of several workers sharing it never interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import stat
import time
from pathlib import Path

from qanat.errors import ConfigError
from qanat.gateway.metrics import Outcome

_LINE = (
    '{"time":"%s.%03dZ","request_id":"%s","client":"%s","method":"%s","path":%s,"route":%s,'
    '"upstream":%s,"instance":%s,"status":%d,"bytes":%d,"duration_ms":%.3f,"error":%s}\n'
)
_FLUSH_AT = 64 * 1024
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\\x7f-\U0010ffff]').search


def _q(value: str) -> str:
    """``value`` as a JSON string; the common case (plain ASCII) skips ``json.dumps``."""
    if _NEEDS_ESCAPE(value) is None:
        return '"' + value + '"'
    return json.dumps(value)


class AccessLog:
    """An ``Observer`` writing ``Outcome``s as JSON lines to a file descriptor.

    ``AccessLog.open(spec)``: ``"stderr"``, ``"stdout"`` or a file path
    (appended to, created if missing). Call ``close()`` at shutdown; it
    flushes what is buffered.
    """

    def __init__(self, fd: int, *, own: bool = False) -> None:
        self._fd = fd
        self._own = own
        self._pipe = not stat.S_ISREG(os.fstat(fd).st_mode)
        self._lines: list[str] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
        self._quoted: dict[str, str] = {}

    @classmethod
    def open(cls, spec: str) -> AccessLog:
        """An access log on ``stderr``, ``stdout`` or appending to the file ``spec``."""
        if spec == "stderr":
            return cls(2)
        if spec == "stdout":
            return cls(1)
        try:
            Path(spec).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(spec, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open the access log: {exc.strerror}",
                              source=f"--access-log {spec}") from None
        return cls(fd, own=True)

    def __call__(self, o: Outcome) -> None:
        second = int(o.started)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        # request id ([A-Za-z0-9._-] or hex), client (an IP) and method (a token) need
        # no escaping; route, upstream and instance repeat, so their quoting is cached
        q = self._quoted
        line = _LINE % (
            self._stamp, int((o.started - second) * 1000), o.request_id, o.client, o.method,
            _q(o.path), q.get(o.route) or self._quote(o.route),
            q.get(o.upstream) or self._quote(o.upstream),
            q.get(o.instance) or self._quote(o.instance), o.status, o.bytes,
            o.duration * 1000.0, "null" if o.error is None else self._quote(o.error),
        )
        if not self._lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a test, a script): write at once
                self._lines.append(line)
                self.flush()
                return
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_AT:
            self.flush()

    def _quote(self, value: str) -> str:
        if len(self._quoted) >= 4096:  # instance addresses churn: keep the cache bounded
            self._quoted.clear()
        quoted = self._quoted[value] = _q(value)
        return quoted

    def flush(self) -> None:
        """Write every buffered line now."""
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        if not self._pipe:
            self._write("".join(lines).encode())
            return
        piece: list[str] = []
        size = 0
        for line in lines:
            if piece and size + len(line) > _PIPE_BUF:
                self._write("".join(piece).encode())
                piece, size = [], 0
            piece.append(line)
            size += len(line)
        self._write("".join(piece).encode())

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:  # a non-blocking pipe is full: wait for the reader
                select.select([], [self._fd], [])
            except OSError:  # the reader went away: drop the log, never the request
                return

    def close(self) -> None:
        """Flush and, for a file this log opened, close it; idempotent."""
        self.flush()
        if self._own and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


__all__ = ["AccessLog"]
