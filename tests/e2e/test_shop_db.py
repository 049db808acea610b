"""The shop's database setup when every replica starts at once (no CLI: plain processes)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import SHOP

from qanat.testing import eventually_sync

REPLICAS = 3
# Each child imports the real app module, says it is ready, waits for the "go" file, then
# does what the app's startup does: create the schema and seed the rows.
CHILD = """
import asyncio, os, sys
sys.path.insert(0, sys.argv[1])
from shop_common.db import ensure_schema, seed
from users.app import SELLERS, engine, metadata, users

async def main():
    await ensure_schema(engine, metadata)
    async with engine.begin() as conn:
        await seed(conn, users, [{"id": i, "name": n, "email": e} for i, n, e in SELLERS])
    await engine.dispose()

open(sys.argv[2] + "." + str(os.getpid()), "w").close()
sys.stdin.readline()  # line up with the other replicas: "go" is written to all at once
asyncio.run(main())
print("ok")
"""


def test_replicas_creating_the_schema_together_all_start(tmp_path: Path) -> None:
    """Three processes creating and seeding one fresh SQLite file at the same instant all succeed,
    and the seed rows exist once."""
    db = tmp_path / "users.db"
    env = {**os.environ, "QANAT_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    env.pop("QANAT_SERVICE", None)
    ready = tmp_path / "ready"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(SHOP), str(ready)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for _ in range(REPLICAS)
    ]

    def all_waiting() -> bool:  # every child imported the app and waits for "go"
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
        return len(list(tmp_path.glob("ready.*"))) == REPLICAS

    eventually_sync(all_waiting, timeout=60, what="every child to import the app")
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [c.communicate(timeout=60) for c in children]
    for child, (out, errors) in zip(children, results, strict=True):
        assert child.returncode == 0 and out.strip() == "ok", errors
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id FROM users ORDER BY id").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert [r[0] for r in rows] == [1, 2, 3]
    assert {"users", "idempotency"} <= tables
