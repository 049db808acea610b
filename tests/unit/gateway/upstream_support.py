"""Real upstreams for the proxy's unit tests: scripted HTTP/1.1 servers on 127.0.0.1:0.

The proxy is handed a real ``HttpPool`` (it is compiled against the class), so
what it talks to is a server: ``tests/unit/http/upstream_servers.Upstream``,
whose parser is independent of the pool's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tests.unit.http.upstream_servers import Exchange, Handler, Received, Upstream


@dataclass
class Script:
    """Answers the n-th request (counted over every server it serves) with the n-th
    raw response, the last one again after the end; ``calls`` in arrival order."""

    answers: list[bytes]
    calls: list[Received] = field(default_factory=list)

    async def __call__(self, req: Received, ex: Exchange) -> None:
        self.calls.append(req)
        await ex.send(self.answers[min(len(self.calls), len(self.answers)) - 1])


@contextlib.asynccontextmanager
async def upstreams(handler: Handler, n: int = 1) -> AsyncIterator[list[Upstream]]:
    """``n`` servers answering with ``handler``, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Upstream(handler)) for _ in range(n)]


def targets(servers: list[Upstream]) -> list[dict[str, str]]:
    """The static targets of a route's upstream for ``servers``."""
    return [{"url": f"http://127.0.0.1:{s.port}"} for s in servers]
