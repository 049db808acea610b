"""The reference peer: a fair keep-alive reverse proxy written with aiohttp.

Run: ``python benchmarks/gateway/aiohttp_proxy.py --port 0 --upstream 127.0.0.1:8001``;
once listening it prints ``listening on 127.0.0.1:PORT``.

What a Python team would write without a gateway, done properly: one
``aiohttp.web`` server on uvloop (access log off), one pooled
``ClientSession`` (keep-alive, no per-host cap, no cookie jar, no automatic
decompression or extra default headers), hop-by-hop headers dropped both
ways (RFC 9110 §7.6.1), ``X-Forwarded-For`` appended, the request body
streamed up and the response body relayed. It does no routing, path
normalisation or hardening beyond aiohttp's own, so it is a lower bound on
what a Python proxy costs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "te", "transfer-encoding", "upgrade", "proxy-connection",
     "trailer", "proxy-authenticate", "proxy-authorization")
)


def forward_headers(headers: CIMultiDictProxy[str], peer: str) -> list[tuple[str, str]]:
    """Request headers for the upstream: hop-by-hop removed, X-Forwarded-For appended."""
    xff = headers.get("X-Forwarded-For")
    out = [(k, v) for k, v in headers.items()
           if k.lower() not in HOP_BY_HOP and k.lower() != "x-forwarded-for"]
    out.append(("X-Forwarded-For", f"{xff}, {peer}" if xff else peer))
    return out


def make_app(upstream: str) -> web.Application:
    base = f"http://{upstream}"
    app = web.Application()

    async def start(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None)
        app["session"] = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = app["session"]
        headers = forward_headers(request.headers, request.remote or "")
        body = request.content if request.body_exists else None
        async with session.request(
            request.method, base + request.path_qs, headers=headers, data=body,
            allow_redirects=False,
        ) as resp:
            out = [(k, v) for k, v in resp.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
            data = await resp.read()  # small bodies: one read, sent with Content-Length
            return web.Response(status=resp.status, reason=resp.reason, body=data,
                                headers=out)  # type: ignore[arg-type]

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


async def serve(host: str, port: int, upstream: str) -> None:
    runner = web.AppRunner(make_app(upstream), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    server = site._server  # the bound port, after binding port 0
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on {host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--upstream", required=True, help="host:port of the upstream")
    args = parser.parse_args(argv)
    import uvloop

    try:
        uvloop.run(serve(args.host, args.port, args.upstream))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
