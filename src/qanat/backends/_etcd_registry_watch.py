"""The etcd registry's watch: list a service, then follow its key prefix.

List the service's keys, yield that snapshot, then watch the prefix from the
list's revision + 1, so no change falls between the two. Each watch response
(a transaction's events arrive together) yields one complete snapshot, sorted
by id; a snapshot equal to the previous one is not repeated. A broken stream
resumes from the last revision seen (backoff between attempts); a compacted
or wiped store (``WatchCompacted``) makes it list again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aetcd import rpc

from qanat.backends._common import instance_from_json
from qanat.backends._etcd import ConnectionClosed, EtcdConnection, WatchCompacted, watch_batches
from qanat.backends._etcd_util import Backoff, prefix_end
from qanat.errors import BackendUnreachable
from qanat.ports import Instance


async def list_service(
    conn: EtcdConnection, root: str, service: str
) -> tuple[dict[str, Instance], int]:
    """The service's instances by id, and the store revision of the listing."""
    prefix = f"{root}{service}/".encode()
    req = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))
    found = await conn.call("kvstub", "Range", req, f"listing service {service!r}")
    by_id = {}
    for kv in found.kvs:
        inst = instance_from_json(kv.value.decode())
        by_id[inst.id] = inst
    return by_id, int(found.header.revision)


async def watch_service(
    conn: EtcdConnection, root: str, service: str, closed: Callable[[], bool]
) -> AsyncGenerator[list[Instance], None]:
    """Snapshots of ``service`` under ``root`` until ``closed()`` or the connection closes."""
    prefix = f"{root}{service}/".encode()
    state: dict[str, Instance] | None
    state, revision = await list_service(conn, root, service)
    last = snapshot_of(state)
    yield last
    backoff = Backoff()
    while not closed():
        endpoint = conn.current
        try:
            if state is None:  # compacted or reset: start again from a fresh listing
                state, revision = await list_service(conn, root, service)
                if (snap := snapshot_of(state)) != last:
                    last = snap
                    yield snap
            start = revision + 1
            async with contextlib.aclosing(
                watch_batches(conn, prefix, prefix_end(prefix), start, prev_kv=False)
            ) as batches:
                async for events in batches:
                    revision = apply_events(state, events)
                    backoff.reset()
                    if (snap := snapshot_of(state)) != last:
                        last = snap
                        yield snap
            return  # the stream ends quietly only when the registry is closed
        except WatchCompacted:
            state = None
        except ConnectionClosed:
            return
        except BackendUnreachable:
            if conn.closed:  # close() ended the stream under us
                return
            conn.failed(endpoint)
            await asyncio.sleep(backoff.next())


def snapshot_of(state: dict[str, Instance]) -> list[Instance]:
    """The instances of ``state`` sorted by id (a registry watch snapshot)."""
    return [state[i] for i in sorted(state)]


def apply_events(state: dict[str, Instance], events: list[Any]) -> int:
    """Apply one watch response's events to ``state``; return the last revision seen."""
    revision = 0
    for event in events:
        iid = event.kv.key.decode().rsplit("/", 1)[1]
        if event.type == rpc.Event.DELETE:
            state.pop(iid, None)
        else:
            state[iid] = instance_from_json(event.kv.value.decode())
        revision = int(event.kv.mod_revision)
    return revision


__all__ = ["apply_events", "list_service", "snapshot_of", "watch_service"]
