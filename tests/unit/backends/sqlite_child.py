"""A separate process for the SQLite fault tests (run as a script, not collected).

``register URL SERVICE ID TTL``: register one instance, print ``ready``, then
keep it alive until killed.

``race URL NAME ROUNDS``: print ``ready``, wait until ``race/go`` is set,
then for each round try ``compare_and_set("race/<n>", NAME, expected_revision=0)``
and print the rounds won as JSON.

``increment URL NAME TIMES``: print ``ready``, wait for ``race/go``, then add
one to ``race/counter`` TIMES times with a read / compare-and-set retry loop;
print the number of lost compare-and-sets.
"""

from __future__ import annotations

import asyncio
import json
import sys

from qanat.backends.sqlite import SqliteConfigStore, SqliteRegistry
from qanat.ports import Instance


async def register(url: str, service: str, iid: str, ttl: str) -> None:
    registry = await SqliteRegistry.open(url)
    await registry.register(Instance(iid, service, "127.0.0.1", 8000), ttl=float(ttl))
    print("ready", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


async def ready_steady(url: str) -> SqliteConfigStore:
    store = await SqliteConfigStore.open(url)
    watch = store.watch("race/go", start_revision=0)
    print("ready", flush=True)
    await anext(watch)
    await watch.aclose()
    return store


async def race(url: str, name: str, rounds: str) -> None:
    store = await ready_steady(url)
    won = [
        n
        for n in range(int(rounds))
        if await store.compare_and_set(f"race/{n}", name, expected_revision=0)
    ]
    print(json.dumps(won), flush=True)
    await store.close()


async def increment(url: str, name: str, times: str) -> None:
    store = await ready_steady(url)
    lost = 0
    for _ in range(int(times)):
        while True:
            entry = await store.get("race/counter")
            value, revision = (int(entry.value), entry.revision) if entry else (0, 0)
            if await store.compare_and_set(
                "race/counter", str(value + 1), expected_revision=revision
            ):
                break
            lost += 1
    print(json.dumps(lost), flush=True)
    await store.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    asyncio.run({"register": register, "race": race, "increment": increment}[command](*args))
