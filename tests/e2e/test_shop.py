"""The shop end to end: started with ``qanat up``, every request through the gateway."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import SHOP, ShopRun, _copy_shop
from tests.e2e.shop_client import Outcome, Traffic, request_count

from qanat.observability.tracing import read_spans
from qanat.testing import eventually_sync, free_port

pytestmark = pytest.mark.e2e

BUDGET = "x-qanat-budget-ms"


class AdminShopRun(ShopRun):
    """A ``ShopRun`` whose gateway also serves its admin endpoints (on ``admin_url``)."""

    def __init__(self, root: Path, port: int, admin_port: int) -> None:
        super().__init__(root, port)
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        topology = root / "qanat.yaml"
        text = topology.read_text()
        line = "\n  port: 8080\n"  # the gateway block's port
        assert text.count(line) == 1, text
        topology.write_text(text.replace(line, f"{line}  admin_port: {admin_port}\n"))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopRun]:
    """The shop under ``qanat up`` for this module (conftest's, with the gateway's admin
    endpoints on: a failed request is explained by each route's retry budget)."""
    root = _copy_shop(tmp_path_factory.mktemp("e2e"))
    run = AdminShopRun(root, free_port(), free_port())
    try:
        run.start()
        yield run
    finally:
        run.stop()


def seed_products() -> list[tuple[int, str, str, int, int]]:
    """The catalog's seed rows, read from the shop's own source (no copy in the test)."""
    scope: dict[str, Any] = {}
    exec((SHOP / "catalog" / "seed.py").read_text(), scope)
    rows: list[tuple[int, str, str, int, int]] = scope["PRODUCTS"]
    return rows


def unique_email() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}@example.com"


def test_users_routes_through_the_gateway(shop: ShopRun) -> None:
    """Create, read, duplicate, invalid and unknown users answer 201, 200, 409, 422 and 404."""
    with httpx.Client(base_url=shop.url, timeout=10) as c:
        email = unique_email()
        created = c.post("/api/users", json={"name": "Ann", "email": email})
        assert created.status_code == 201, created.text
        user = created.json()
        assert user["name"] == "Ann" and user["email"] == email

        read = c.get(f"/api/users/{user['id']}")
        assert read.status_code == 200 and read.json() == user

        duplicate = c.post("/api/users", json={"name": "Other", "email": email})
        assert duplicate.status_code == 409
        assert email in duplicate.json()["detail"]

        invalid = c.post("/api/users", json={"name": "", "email": "not-an-email"})
        assert invalid.status_code == 422
        fields = {tuple(d["loc"]) for d in invalid.json()["detail"]}
        assert fields == {("body", "name"), ("body", "email")}

        assert c.get("/api/users/987654321").status_code == 404


def test_products_routes_through_the_gateway(shop: ShopRun) -> None:
    """The list, a search, one product with its seller from users, and an unknown product."""
    products = seed_products()
    with httpx.Client(base_url=shop.url, timeout=10) as c:
        page = c.get("/api/products", params={"limit": 100})
        assert page.status_code == 200
        assert [p["id"] for p in page.json()["items"]] == [p[0] for p in products]
        assert page.json()["total"] == len(products)

        term = "book"
        expected = [p[0] for p in products if term in (p[1] + " " + p[2]).lower()]
        found = c.get("/api/products", params={"q": term})
        assert found.status_code == 200
        assert [p["id"] for p in found.json()["items"]] == expected and expected

        pid, name, _, price, seller_id = products[4]
        one = c.get(f"/api/products/{pid}")
        assert one.status_code == 200, one.text
        body = one.json()
        assert (body["name"], body["price_cents"]) == (name, price)
        seller = c.get(f"/api/users/{seller_id}").json()
        assert body["seller"] == {"id": seller_id, "name": seller["name"]}

        assert c.get("/api/products/987654").status_code == 404


def _kill_and_wait_for_restart(shop: ShopRun, traffic: Traffic, name: str) -> str:
    """SIGKILL ``name``, wait until it is ready again and traffic flowed on; returns
    what was killed when (for a failure message)."""
    before = shop.instance(name)
    assert before["status"] == "ready" and before["pid"]
    killed_at = time.time()
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        now = shop.instance(name)
        return (
            now["restarts"] == before["restarts"] + 1
            and now["status"] == "ready"
            and now["pid"] not in (None, before["pid"])
        )

    eventually_sync(restarted, timeout=30, interval=0.05, what=f"the supervisor to restart {name}")
    seen = traffic.count()
    eventually_sync(
        lambda: traffic.count() >= seen + 40,
        timeout=30,
        interval=0.05,
        what="traffic after the restart",
    )
    return f"{name} ({before['url']}) killed at {_clock(killed_at)}"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _retry_report(shop: ShopRun, failures: list[Outcome], kills: list[str]) -> str:
    """What explains failed requests: each route's retry budget (granted, refused by the
    budget, in flight) from the gateway's admin /upstreams, and each failure's status,
    problem detail and access-log line (instance, when, how long)."""
    assert isinstance(shop, AdminShopRun)
    lines = [*kills]
    for entry in httpx.get(f"{shop.admin_url}/upstreams", timeout=10).json():
        budget = (entry.get("traffic") or {}).get("retry_budget") or {}
        lines.append(
            f"route {entry['route']}: retries granted {budget.get('granted')}, refused by the "
            f"retry budget {budget.get('refused')} (in flight now: {budget.get('active_retries')}"
            f" retries, {budget.get('active_requests')} requests)"
        )
    access = _access_log(shop)
    kinds = Counter((o.path, o.status, _problem(o).get("detail", o.error)) for o in failures)
    lines += [f"{n} x {path} -> {status}: {detail}" for (path, status, detail), n in
              kinds.most_common()]
    for o in failures[:10]:
        line = access.get(str(_problem(o).get("request_id", "")))
        if line is not None:
            lines.append(
                f"  {line['time']} {line['path']} via {line['instance']}: {line['status']} "
                f"in {line['duration_ms']} ms, error {line['error']}"
            )
    return "\n".join(lines)


def _problem(o: Outcome) -> dict[str, Any]:
    try:
        body = json.loads(o.error)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _access_log(shop: ShopRun) -> dict[str, dict[str, Any]]:
    """The gateway's access-log lines by request id (its log holds them among others)."""
    out = {}
    path = shop.state / "logs" / "gateway.log"
    for text in path.read_text(errors="replace").splitlines():
        if text.startswith('{"time"') and '"request_id"' in text:
            with_id = json.loads(text)
            out[with_id["request_id"]] = with_id
    return out


def test_sigkill_under_traffic_fails_no_idempotent_request(shop: ShopRun) -> None:
    """SIGKILL a catalog and a users instance during steady GETs: every GET succeeds, sellers
    are still filled in, and both restart, saying so."""
    paths = ["/api/products", "/api/products/3", "/api/users/1", "/api/products?q=cup"]
    # Six clients: more than Envoy's retry-budget floor of 3 concurrent retries. A refused
    # connection is retried without the budget; a GET the killed instance had (on a fresh
    # connection: a reused one is retried by the pool) asks the budget, and the gateway's
    # default lets every request in flight retry (docs/retries.md, "The gateway's default").
    traffic = Traffic(shop.url, paths, clients=6)
    traffic.start()
    try:
        eventually_sync(
            lambda: traffic.count() >= 40, timeout=30, interval=0.05, what="traffic to flow"
        )
        kills = [_kill_and_wait_for_restart(shop, traffic, "catalog-0"),
                 _kill_and_wait_for_restart(shop, traffic, "users-0")]
    finally:
        traffic.stop()
    # The gateway buffers small responses (buffer_response_bytes), so even a body cut mid-way
    # by the kill is retried on another instance instead of reaching the client cut.
    failures = traffic.failures()
    report = _retry_report(shop, failures, kills)
    print(report)  # shown with -rP when it passes: how many retries the kills took
    assert not failures, f"{len(failures)} of {traffic.count()} failed\n{report}"
    details = [o for o in traffic.outcomes if o.path == "/api/products/3"]
    assert details and all(o.body and o.body.get("seller") for o in details)
    out = shop.output()
    for name in ("catalog-0", "users-0"):
        assert re.search(rf"{name} exited with signal SIGKILL; restarting in", out), out
        assert f"{name} ready again at" in out


def test_scaled_up_instance_receives_traffic(shop: ShopRun) -> None:
    """'qanat scale catalog 3' starts catalog-2, it gets gateway traffic, and scaling back
    down removes it."""
    result = shop.qanat("scale", "catalog", "3")
    assert result.returncode == 0, result.stderr
    assert "started: catalog-2" in result.stdout
    new = shop.instance("catalog-2")
    assert new["status"] == "ready"
    eventually_sync(
        lambda: shop.instance("catalog-2")["health"] == "passing",
        timeout=15,
        interval=0.05,
        what="registration",
    )

    with httpx.Client(base_url=shop.url, timeout=10) as c:

        def served_by_new() -> bool:
            for _ in range(10):
                assert c.get("/api/products").status_code == 200
            return request_count(new["url"], "/products") > 0

        eventually_sync(
            served_by_new,
            timeout=30,
            interval=0.05,
            what="the gateway to send requests to catalog-2",
        )

    result = shop.qanat("scale", "catalog", "2")
    assert result.returncode == 0, result.stderr
    assert [r["name"] for r in shop.status() if r["group"] == "catalog"] == [
        "catalog-0",
        "catalog-1",
    ]


def test_spent_budget_is_refused_with_504_before_any_work(shop: ShopRun) -> None:
    """With x-qanat-budget-ms: 0 a POST creates nothing and a GET reaches no handler."""
    catalog = [r for r in shop.status() if r["group"] == "catalog"]
    handled_before = sum(request_count(r["url"], "/products") for r in catalog)
    with httpx.Client(base_url=shop.url, timeout=10) as c:
        email = unique_email()
        refused = c.post("/api/users", json={"name": "Late", "email": email}, headers={BUDGET: "0"})
        assert refused.status_code == 504
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert c.get("/api/products", headers={BUDGET: "0"}).status_code == 504
        # Had the refused POST created the user, this would be a 409.
        assert c.post("/api/users", json={"name": "Late", "email": email}).status_code == 201
    handled_after = sum(request_count(r["url"], "/products") for r in catalog)
    assert handled_after == handled_before


def test_one_trace_id_flows_through_catalog_and_users(shop: ShopRun) -> None:
    """A traceparent sent to the gateway comes back in spans of both catalog and users."""
    trace_id = secrets.token_hex(16)
    parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    r = httpx.get(f"{shop.url}/api/products/4", headers={"traceparent": parent}, timeout=10)
    assert r.status_code == 200 and r.json()["seller"]

    def services_in_trace() -> set[str] | None:
        spans = [s for s in read_spans(shop.state) if s["trace_id"] == trace_id]
        services = {str(s["service"]) for s in spans}
        return services if {"catalog", "users"} <= services else None

    services = eventually_sync(
        services_in_trace, timeout=15, interval=0.05, what=f"spans of trace {trace_id}"
    )
    assert {"catalog", "users"} <= services


def test_status_shows_every_instance_ready_and_passing(shop: ShopRun) -> None:
    """'qanat status' lists each replica from qanat.yaml with its URL, ready and passing."""
    result = shop.qanat("status")
    assert result.returncode == 0, result.stderr
    rows = shop.status()
    by_group: dict[str, list[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r["name"])
        assert r["status"] == "ready", r
        if r["group"] != "gateway":
            assert r["health"] == "passing", r
        assert r["url"] in result.stdout
    assert by_group["users"] == ["users-0", "users-1"]
    assert by_group["catalog"] == ["catalog-0", "catalog-1"]
    assert by_group["gateway"] == ["gateway"]
