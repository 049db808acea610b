"""Helpers the e2e tests share: reading an instance's metrics, steady traffic with failures kept."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families


def request_count(instance_url: str, route: str, method: str = "GET") -> float:
    """Requests an instance handled on ``route`` (its ``qanat_http_requests_total``, any status)."""
    text = httpx.get(f"{instance_url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "qanat_http_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels.get("route") == route
                and labels.get("method") == method
            ):
                total += sample.value
    return total


@dataclass
class Outcome:
    path: str
    status: int | None
    error: str = ""
    body: dict[str, object] | None = None


@dataclass
class Traffic:
    """A steady stream of idempotent GETs from ``clients`` threads until ``stop()``.

    Every outcome is kept, so a test can show that none failed. Each client has
    its own connection pool (as separate users would); requests are bounded by
    a per-request timeout and by ``stop()``.
    """

    base_url: str
    paths: Sequence[str]
    clients: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            n = offset
            while not self._stop.is_set():
                path = self.paths[n % len(self.paths)]
                n += 1
                try:
                    r = client.get(path)
                    body = r.json() if r.headers.get("content-type", "").startswith(
                        "application/json"
                    ) else None
                    outcome = Outcome(path, r.status_code, body=body,
                                      error="" if r.status_code == 200 else r.text[:500])
                except httpx.HTTPError as exc:
                    outcome = Outcome(path, None, error=repr(exc))
                with self._lock:
                    self.outcomes.append(outcome)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status != 200]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
