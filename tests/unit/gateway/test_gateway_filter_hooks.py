"""Filters written as hooks (``on_request``) and the runner that drives a run of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from qanat.gateway.filters import (
    Exchange,
    Handler,
    HookFilter,
    Hooks,
    Reply,
    Verdict,
    add_reply_headers,
    chain,
)


def _ex() -> Exchange:
    return Exchange(b"GET", b"/", b"", [], host=b"h", authority=b"h", peer=b"p",
                    scheme=b"http", request_id=b"r")


class Step(HookFilter):
    """Records its name; adds a reply header; answers or waits as told."""

    def __init__(self, name: str, log: list[str], *, answer: int | None = None,
                 wait: bool = False) -> None:
        self.name, self.log, self.answer, self.wait = name, log, answer, wait

    def on_request(self, ex: Exchange) -> Verdict:
        self.log.append(self.name)
        add_reply_headers(ex, [(b"x-step", self.name.encode())])
        if self.wait:
            return self._later()
        return self._decide()

    def _decide(self) -> Reply | None:
        return Reply(self.answer, [], b"") if self.answer is not None else None

    async def _later(self) -> Reply | None:
        await asyncio.sleep(0)
        return self._decide()


def _inner(log: list[str]) -> Handler:
    def inner(ex: Exchange) -> Awaitable[Reply]:
        log.append("inner")
        return Reply(200, [(b"x-inner", b"1")], b"ok")  # a Reply awaits to itself

    return inner


async def test_a_reply_awaits_to_itself() -> None:
    reply = Reply(204, [])
    assert await reply is reply


async def test_hooks_run_in_order_then_inner_and_the_reply_gets_every_added_header() -> None:
    log: list[str] = []
    handler = chain([Step("a", log), Step("b", log, wait=True)], _inner(log))
    assert isinstance(handler, Hooks)  # one runner for both
    reply = await handler(_ex())
    assert log == ["a", "b", "inner"]
    assert reply.status == 200
    assert reply.headers == [(b"x-inner", b"1"), (b"x-step", b"a"), (b"x-step", b"b")]


async def test_an_answering_hook_stops_the_run_and_its_reply_keeps_earlier_headers() -> None:
    for wait in (False, True):
        log: list[str] = []
        handler = chain([Step("a", log), Step("b", log, answer=429, wait=wait), Step("c", log)],
                        _inner(log))
        reply = await handler(_ex())
        assert log == ["a", "b"], wait
        assert reply.status == 429
        assert reply.headers == [(b"x-step", b"a"), (b"x-step", b"b")]


async def test_an_around_filter_between_hooks_splits_the_run_and_sees_the_inner_reply() -> None:
    log: list[str] = []
    seen: list[int] = []

    async def around(ex: Exchange, call_next: Handler) -> Reply:
        log.append("around")
        reply = await call_next(ex)
        seen.append(len(reply.headers))
        reply.headers.append((b"x-around", b"1"))
        return reply

    handler = chain([Step("a", log), around, Step("b", log)], _inner(log))
    reply = await handler(_ex())
    assert log == ["a", "around", "b", "inner"]
    # added headers go on the first reply made, once: "around" already sees a's and b's
    assert seen == [3]
    assert reply.headers == [(b"x-inner", b"1"), (b"x-step", b"a"), (b"x-step", b"b"),
                             (b"x-around", b"1")]


async def test_a_hook_filter_can_still_be_called_around_style() -> None:
    log: list[str] = []
    step = Step("a", log)
    reply = await step(_ex(), _inner(log))
    assert log == ["a", "inner"]
    assert reply.headers == [(b"x-inner", b"1"), (b"x-step", b"a")]
    refused = await Step("b", log, answer=401, wait=True)(_ex(), _inner(log))
    assert refused.status == 401 and log[-1] == "b"


def test_key_auth_decides_at_once_without_a_coroutine() -> None:
    """An API key is checked in memory: the hook answers or admits synchronously, and the
    key never goes upstream."""
    import hashlib

    from qanat.gateway.filters_auth import key_auth_filter

    digest = hashlib.sha256(b"k-123").hexdigest()
    f = key_auth_filter({"consumers": [{"name": "shop", "key_sha256": digest}]}, "r")
    ex = Exchange(b"GET", b"/", b"", [(b"apikey", b"k-123"), (b"accept", b"*/*")], host=b"h",
                  authority=b"h", peer=b"p", scheme=b"http", request_id=b"r")
    assert f.on_request(ex) is None
    assert ex.state is not None and ex.state["identity"].consumer == "shop"
    assert (b"apikey", b"k-123") not in ex.headers and (b"accept", b"*/*") in ex.headers
    bad = Exchange(b"GET", b"/", b"", [(b"apikey", b"nope")], host=b"h", authority=b"h",
                   peer=b"p", scheme=b"http", request_id=b"r")
    refused = f.on_request(bad)
    assert isinstance(refused, Reply) and refused.status == 401


def test_a_bad_filter_config_names_the_field_in_the_topology_file_s_words() -> None:
    """rate_limit and fault configs fail like topology files do: the field, then the fix."""
    import pytest

    from qanat.errors import ConfigError
    from qanat.gateway.filters import build_filter

    cases = [("rate_limit", {"rate": 1, "bogus": 2}, "bogus: unknown field (check the spelling"),
             ("rate_limit", {"rate": -1}, "rate: Input should be greater than 0 (got -1)"),
             ("fault", {"abort": {"status": 700}}, "abort.status: Input should be less than or")]
    for name, config, expected in cases:
        with pytest.raises(ConfigError) as caught:
            build_filter(name, config, "r", "route 'r' (routes[0]).filters[0]")
        assert expected in str(caught.value), str(caught.value)
        assert "routes[0]).filters[0].config" in str(caught.value)


async def test_after_a_hook_that_waits_the_later_hooks_still_run_in_order() -> None:
    log: list[str] = []
    handler = chain([Step("a", log, wait=True), Step("b", log), Step("c", log, wait=True)],
                    _inner(log))
    reply = await handler(_ex())
    assert log == ["a", "b", "c", "inner"]
    assert [v for k, v in reply.headers if k == b"x-step"] == [b"a", b"b", b"c"]


async def test_a_proxy_made_502_carries_the_rate_limit_fields() -> None:
    """The hooks' reply headers go on the proxy's own problems too (a refused upstream)."""
    from qanat.gateway.app import Gateway
    from qanat.testing import free_port

    routes = [{"name": "r", "match": {"prefix": "/"},
               "filters": [{"name": "rate_limit", "config": {"rate": 100, "key": "route"}}],
               "upstream": {"kind": "static",
                            "targets": [{"url": f"http://127.0.0.1:{free_port()}"}]}}]
    gw = Gateway(routes)
    await gw.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
    finally:
        await gw.aclose(1.0)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 502")
    assert b"\r\nratelimit-policy: " in head and b"\r\nx-ratelimit-remaining: 99" in head
