"""The calling conventions of gateway filters, and their registry.

A filter comes in one of two shapes:

- **hooks** (what the built-in filters are): an object with ``on_request(exchange)``
  returning ``None`` to go on, a ``Reply`` to answer at once (a 401, a 429), or
  an awaitable of either when it must wait (a JWKS fetch, a Redis round trip).
  Headers for whatever reply the exchange ends with go through
  ``add_reply_headers`` (rate-limit fields on a 200 as on a 502). The filters
  of a run of hooks are driven by one loop in one coroutine (Envoy's
  ``decodeHeaders`` returning Continue or StopIteration), not a coroutine
  each: on the full benchmark stack that is most of what a filter cost.
- **around** (a Starlette middleware reduced to one function): an async
  callable ``(exchange, call_next) -> Reply`` that may edit the exchange,
  answer without calling ``call_next``, or call it and edit the ``Reply`` on
  the way back. Any filter can be called this way: ``HookFilter.__call__``
  adapts the hooks.

Filters of a route run in declaration order around the proxy, which is the
innermost handler; ``chain`` groups consecutive hook filters into one runner.

A route names its filters in config (``filters: [{name: rate_limit, config:
{...}}]``); ``register_filter(name, factory)`` makes a name known. A factory
receives the filter's ``config`` mapping and the route's name, and returns the
filter or raises ``ConfigError``: a bad filter config rejects the route set.
The built-in filters (``jwt``/``jwt_auth``, ``key_auth``, ``rate_limit``,
``fault``) register themselves the first time a name is looked up.

Identity headers (``x-qanat-identity-*``, ``x-consumer-*``,
``x-credential-*``) are removed from every ``Exchange`` as it is built, so no
filter, no route and no upstream ever sees one a client sent; only an
authentication filter adds them back, with what it verified
(``docs/security.md``).
"""

from __future__ import annotations

import importlib
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
    Sequence,
)
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

from qanat.errors import ConfigError
from qanat.security.identity import IDENTITY_HEADER_PREFIXES

HeaderList = list[tuple[bytes, bytes]]
_BUILTINS: tuple[str, ...] = ("filters_auth", "filters_ratelimit", "filters_traffic")


def without_identity(headers: HeaderList) -> HeaderList:
    """``headers`` minus every identity header (the same list when there is none).

    Only names starting with ``x``/``X`` can match, so the common request costs
    a slice comparison or two per header and no copy (``name[:1] in b"xX"``
    would cost more: CPython first tries the operand as an int and formats a
    TypeError it then drops).
    """
    for name, _ in headers:
        first = name[:1]
        if ((first == b"x" or first == b"X")
                and name.lower().startswith(IDENTITY_HEADER_PREFIXES)):
            return [
                (k, v) for k, v in headers
                if not k.lower().startswith(IDENTITY_HEADER_PREFIXES)
            ]
    return headers


class Exchange:
    """One request as the filters and the proxy see it.

    ``path`` is the normalised path the route matched (and, unless the route
    rewrites it, the one forwarded); ``headers`` have lower-case names and are
    the client's, before the gateway's forwarding edits, minus any identity
    header (stripped here, on every request, before any filter runs);
    ``state`` is a dict for filters to share data within the request (None
    until a filter sets it; ``identity`` holds an authenticated caller);
    ``reply_headers`` are added to the reply, whoever makes it (see
    ``add_reply_headers``).
    """

    __slots__ = (
        "authority", "body", "connection", "headers", "host", "method", "note", "params",
        "path", "peer", "query", "reply_headers", "request_id", "route", "scheme", "state",
    )

    def __init__(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: HeaderList,
        *,
        host: bytes,
        authority: bytes,
        peer: bytes,
        scheme: bytes,
        request_id: bytes,
        connection: tuple[bytes, ...] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        route: Any = None,
        params: dict[str, str] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = without_identity(headers)
        self.host = host  # lower-case, no port: what routing used
        self.authority = authority  # the Host value as sent
        self.peer = peer
        self.scheme = scheme
        self.request_id = request_id
        self.connection = connection
        self.body = body
        self.route = route
        self.params = params or {}
        self.state: dict[str, Any] | None = None
        self.reply_headers: HeaderList | None = None
        self.note: Any = None  # observe.Note of an observed request (what metrics report)


class Reply:
    """A response for the server to write.

    Exactly one of ``body`` (complete) or ``stream`` (chunks, with ``release``
    called once when writing ends, however it ends) is set, or neither for no
    body. A ``content-length`` in ``headers`` frames a stream; without one a
    stream is sent chunked. ``close`` asks to close the connection after.
    ``done``, a plain callable, is called once after ``release``, however
    writing ended: observers use it, so a reply costs them no coroutine.

    A ``Reply`` is also an awaitable of itself, so a handler that answers at
    once returns it as it is, without a coroutine.
    """

    __slots__ = ("body", "close", "done", "headers", "reason", "release", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: HeaderList,
        body: bytes | None = None,
        *,
        stream: AsyncIterator[bytes] | None = None,
        release: Callable[[], Awaitable[None]] | None = None,
        reason: bytes = b"",
        close: bool = False,
        done: Callable[[], None] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
        self.release = release
        self.reason = reason
        self.close = close
        self.done = done

    def __await__(self) -> Generator[Any, None, Reply]:
        yield from ()  # a generator that ends at once, with the reply as its value
        return self


Handler = Callable[[Exchange], Awaitable[Reply]]
Verdict = Reply | Awaitable[Reply | None] | None  # what ``on_request`` returns


class Filter(Protocol):
    """``async def __call__(exchange, call_next) -> Reply``: the filter signature."""

    def __call__(self, exchange: Exchange, call_next: Handler, /) -> Awaitable[Reply]: ...


def add_reply_headers(ex: Exchange, headers: HeaderList) -> None:
    """Have ``headers`` added to the reply ``ex`` ends with, whoever makes it."""
    if ex.reply_headers is None:
        ex.reply_headers = list(headers)
    else:
        ex.reply_headers += headers


def with_reply_headers(ex: Exchange, reply: Reply) -> Reply:
    """``reply`` with the headers filters asked for (``add_reply_headers``), once."""
    extra = ex.reply_headers
    if extra is not None:
        ex.reply_headers = None
        reply.headers.extend(extra)
    return reply


# Compiled (hatch_build.py), filters in interpreted modules and users' code still subclass it.
@mypyc_attr(allow_interpreted_subclasses=True)
class HookFilter:
    """A filter written as hooks: ``on_request`` decides, and it can still be
    called the *around* way, ``await f(exchange, call_next)``."""

    def on_request(self, ex: Exchange) -> Verdict:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, ex: Exchange, call_next: Handler) -> Awaitable[Reply]:
        return Hooks((self,), call_next)(ex)  # the runner's rules, for a run of one


FilterFactory = Callable[[Mapping[str, Any], str], Filter]
_REGISTRY: dict[str, FilterFactory] = {}


def register_filter(name: str, factory: FilterFactory) -> None:
    """Make ``name`` usable in route configs; re-registering a name replaces it."""
    _REGISTRY[name] = factory


def unregister_filter(name: str) -> None:
    """Forget ``name`` (tests use this to clean up)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    """Import the built-in filter modules once; each registers its names.

    A name the application registered first keeps its factory: built-ins never
    replace a user's filter.
    """
    global _BUILTINS
    modules, _BUILTINS = _BUILTINS, ()
    mine = dict(_REGISTRY)
    for module in modules:
        importlib.import_module(f"qanat.gateway.{module}")
    _REGISTRY.update(mine)


def registered() -> Sequence[str]:
    """The filter names usable in route configs, sorted (built-ins included)."""
    _load_builtins()
    return sorted(_REGISTRY)


def build_filter(name: str, config: Mapping[str, Any], route: str, where: str) -> Filter:
    """Instantiate a named filter; unknown names and bad configs raise ConfigError."""
    if _BUILTINS:
        _load_builtins()
    factory = _REGISTRY.get(name)
    if factory is None:
        known = ", ".join(sorted(_REGISTRY)) or "none registered"
        raise ConfigError(f"unknown filter {name!r} (known: {known})", source=where)
    try:
        return factory(config, route)
    except ConfigError as exc:  # keep the inner field path: "jwt.keys[0]: ..."
        raise ConfigError(str(exc), source=f"{where}.config") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), source=f"{where}.config") from None


def chain(filters: Sequence[Filter], inner: Handler) -> Handler:
    """Wrap ``inner`` so ``filters[0]`` runs first (outermost).

    Consecutive filters with ``on_request`` hooks share one ``Hooks`` runner;
    an *around* filter wraps what follows it.
    """
    handler = inner
    end = len(filters)
    while end > 0:
        start = end
        while start > 0 and callable(getattr(filters[start - 1], "on_request", None)):
            start -= 1
        if start < end:
            handler = Hooks(filters[start:end], handler)
            end = start
        else:
            end -= 1
            handler = _bind(filters[end], handler)
    return handler


class Hooks:
    """Runs the ``on_request`` hooks of consecutive filters in order, then ``inner``.

    One coroutine for the whole run: a hook that answers synchronously, or
    lets the request go on, costs a plain call. The reply, from a hook or
    from ``inner``, gets the headers the hooks asked for (``add_reply_headers``).
    """

    __slots__ = ("_hooks", "_inner")

    def __init__(self, filters: Sequence[Any], inner: Handler) -> None:
        self._hooks: tuple[Callable[[Exchange], Verdict], ...] = tuple(
            f.on_request for f in filters)
        self._inner = inner

    def __call__(self, ex: Exchange) -> Awaitable[Reply]:
        return self._run(ex)

    async def _run(self, ex: Exchange) -> Reply:
        for hook in self._hooks:
            verdict = hook(ex)
            if verdict is not None:
                if verdict.__class__ is not Reply:
                    verdict = await verdict
                if verdict is not None:
                    return with_reply_headers(ex, verdict)
        return with_reply_headers(ex, await self._inner(ex))


def _bind(f: Filter, call_next: Handler) -> Handler:
    def run(exchange: Exchange) -> Awaitable[Reply]:
        return f(exchange, call_next)

    return run


__all__ = [
    "Exchange",
    "Filter",
    "FilterFactory",
    "Handler",
    "HookFilter",
    "Hooks",
    "Reply",
    "Verdict",
    "add_reply_headers",
    "build_filter",
    "chain",
    "register_filter",
    "registered",
    "unregister_filter",
    "with_reply_headers",
    "without_identity",
]
