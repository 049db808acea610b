"""JWKS (RFC 7517) keys for JWT verification: fetched, cached with a TTL, refreshed on demand.

``JwksCache.get()`` returns the cached ``KeySet``, refetching it once it is
older than ``ttl``. A token whose ``kid`` no cached key has (the issuer
rotated its keys) calls ``refresh_for(kid)``, which refetches at once — but
never more than once per ``min_refresh_interval``, so a flood of forged kids
costs the identity provider one request per interval. Concurrent callers
share one fetch. A failed fetch keeps the last good keys (and is counted in
``stats()``); it is retried after ``min_refresh_interval``.

The source is a file path or an ``http(s)://`` URL, read with a tiny asyncio
HTTP/1.0 client (one GET, ``Connection: close``, body capped at 1 MiB).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from qanat.errors import BackendError, ConfigError
from qanat.security.jwt import JwksSettings
from qanat.security.keys import KeySet, keys_from_jwks

MAX_JWKS_BYTES = 1 << 20
Fetch = Callable[[str, float], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class JwksStats:
    """What the cache holds and how fetching went."""

    keys: int
    kids: frozenset[str]
    fetches: int
    failures: int
    refreshes_refused: int  # unknown-kid refreshes skipped by the rate limit
    skipped_keys: tuple[str, ...]  # keys in the document that could not be used, and why
    last_error: str | None
    age: float | None  # seconds since the last successful fetch


class JwksCache:
    """A cached JWKS key set; see the module docstring. ``clock`` is monotonic seconds."""

    def __init__(
        self,
        settings: JwksSettings,
        algorithms: frozenset[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        fetch: Fetch | None = None,
    ) -> None:
        check_source(settings.source)
        self.settings = settings
        self._algorithms = algorithms
        self._clock = clock
        self._fetch = fetch or fetch_document
        self._keys = KeySet()
        self._fetched_at: float | None = None  # last success
        self._tried_at: float | None = None  # last attempt, success or not
        self._lock = asyncio.Lock()
        self._fetches = self._failures = self._refused = 0
        self._skipped: tuple[str, ...] = ()
        self._error: str | None = None

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self.settings.ttl

    def _may_try(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self.settings.min_refresh_interval

    def ready(self) -> KeySet | None:
        """The key set when ``get`` would return it without fetching, else None."""
        now = self._clock()
        if self._stale(now) and self._may_try(now):
            return None
        return self._keys

    async def get(self) -> KeySet:
        """The key set, refetched first when older than ``ttl`` (and a retry is allowed)."""
        now = self._clock()
        if self._stale(now) and self._may_try(now):
            await self._refresh(lambda t: self._stale(t) and self._may_try(t))
        return self._keys

    async def refresh_for(self, kid: str) -> KeySet:
        """Refetch because ``kid`` is unknown, unless a fetch happened too recently."""
        if kid in self._keys.kids:
            return self._keys
        if not self._may_try(self._clock()):
            self._refused += 1
            return self._keys
        await self._refresh(lambda t: kid not in self._keys.kids and self._may_try(t))
        return self._keys

    async def _refresh(self, still_needed: Callable[[float], bool]) -> None:
        async with self._lock:  # one fetch at a time; waiters re-check and usually skip
            now = self._clock()
            if not still_needed(now):
                return
            self._tried_at = now
            self._fetches += 1
            try:
                raw = await self._fetch(self.settings.source, self.settings.timeout)
                keys, skipped = keys_from_jwks(json.loads(raw), self._algorithms)
            except (OSError, ValueError, BackendError, TimeoutError) as exc:
                self._failures += 1
                self._error = f"{type(exc).__name__}: {exc}"
                return
            self._keys, self._skipped, self._error = keys, tuple(skipped), None
            self._fetched_at = self._clock()

    def stats(self) -> JwksStats:
        """A snapshot for metrics and the dashboard."""
        at = self._fetched_at
        return JwksStats(
            len(self._keys),
            self._keys.kids,
            self._fetches,
            self._failures,
            self._refused,
            self._skipped,
            self._error,
            None if at is None else self._clock() - at,
        )


def check_source(source: str) -> None:
    """ConfigError unless ``source`` is an http(s) URL or a path."""
    if not isinstance(source, str) or not source:
        raise ConfigError("jwks needs a file path or an http(s):// URL", source="jwks.source")
    if "://" in source:
        parts = urlsplit(source)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{source!r} is not an http(s) URL", source="jwks.source")


async def fetch_document(source: str, timeout: float) -> bytes:
    """The bytes at ``source`` (a path, or an http(s) URL answered with 200)."""
    if "://" not in source:
        return await asyncio.wait_for(asyncio.to_thread(Path(source).read_bytes), timeout)
    return await asyncio.wait_for(_http_get(source), timeout)


async def _http_get(url: str) -> bytes:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl.create_default_context() if tls else None
    )
    try:
        writer.write(
            f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n"
            "Connection: close\r\nUser-Agent: qanat-jwks\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        data = await reader.read(MAX_JWKS_BYTES + 65536)
        while chunk := await reader.read(65536):
            data += chunk
            if len(data) > MAX_JWKS_BYTES + 65536:
                raise BackendError(f"JWKS at {url}: response larger than {MAX_JWKS_BYTES} bytes")
    finally:
        writer.close()
    return _parse_response(url, data)


def _parse_response(url: str, data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise BackendError(f"JWKS at {url}: incomplete HTTP response")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"200":
        raise BackendError(f"JWKS at {url}: HTTP status {lines[0].decode('latin-1')!r}")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        raise BackendError(f"JWKS at {url}: chunked reply to an HTTP/1.0 request")
    length = fields.get(b"content-length")
    if length is not None and length.isdigit() and len(body) < int(length):
        raise BackendError(f"JWKS at {url}: body shorter than its Content-Length")
    return body


__all__ = ["JwksCache", "JwksStats", "check_source", "fetch_document"]
