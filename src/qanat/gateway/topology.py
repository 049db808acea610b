"""What a gateway process runs, from a topology (``qanat.yaml``) or a route file.

``plan_from_topology`` reads ``gateway.routes``, ``gateway.host/port/
admin_port/workers`` and the registry and config store URLs from
``backends`` (``{state}`` resolved against the file's directory);
``plan_from_file`` reads a ``--config`` route file, which has no backends
unless the command line names them. Command-line values win over the file's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qanat.errors import ConfigError
from qanat.gateway.config import RouteConfig, ServiceUpstream, load_gateway_file
from qanat.topology import load_topology


@dataclass(frozen=True)
class GatewayPlan:
    """Everything needed to start one gateway (or ``workers`` of them).

    ``routes`` are plain mappings (what the config store is seeded with);
    ``registry_url`` is needed by ``kind: service`` routes, ``config_url`` by
    live reload (None: the routes are fixed).
    """

    source: str
    routes: list[Mapping[str, Any]]
    limits: dict[str, Any] = field(default_factory=dict)
    registry_url: str | None = None
    config_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int | None = None
    workers: int = 1

    @property
    def services(self) -> list[str]:
        """Services the plan's routes send to."""
        return sorted({str(r["upstream"]["service"]) for r in self.routes
                       if isinstance(r.get("upstream"), Mapping)
                       and r["upstream"].get("kind") == "service"})


def plan_from_topology(path: str | Path, **overrides: Any) -> GatewayPlan:
    """A plan from a topology file (or a directory holding ``qanat.yaml``).

    ``overrides`` (host, port, admin_host, admin_port, workers, registry_url,
    config_url) replace the file's values when not None.
    """
    topo = load_topology(path)
    spec = topo.gateway
    if not spec.routes:
        raise ConfigError("the topology has no gateway routes (gateway.routes is empty)",
                          source=str(path))
    plan = GatewayPlan(
        source=str(topo.root / "qanat.yaml" if Path(path).is_dir() else path),
        routes=[dict(r) for r in spec.routes],
        registry_url=topo.backend_url("registry"),
        config_url=topo.backend_url("config"),
        host=spec.host,
        port=spec.port,
        admin_port=spec.admin_port,
        workers=spec.workers,
        limits=dict(spec.limits),
    )
    return _override(plan, overrides)


def plan_from_file(path: str | Path, **overrides: Any) -> GatewayPlan:
    """A plan from a ``--config`` route file (``routes:`` and optional ``limits:``)."""
    routes, limits = load_gateway_file(path)
    plan = GatewayPlan(source=str(path), routes=[_mapping(r) for r in routes], limits=limits)
    plan = _override(plan, overrides)
    if plan.registry_url is None and any(isinstance(r.upstream, ServiceUpstream)
                                         for r in routes):
        raise ConfigError("routes with 'kind: service' need a registry: pass --registry URL "
                          "(e.g. sqlite:///.qanat/control.db)", source=str(path))
    return plan


def _mapping(route: RouteConfig) -> dict[str, Any]:
    return route.model_dump(mode="json", exclude_defaults=True)


def _override(plan: GatewayPlan, overrides: Mapping[str, Any]) -> GatewayPlan:
    known = {f for f in GatewayPlan.__dataclass_fields__ if f not in ("source", "routes")}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown plan overrides {sorted(unknown)}")
    values = {k: v for k, v in overrides.items() if v is not None}
    return GatewayPlan(**{**plan.__dict__, **values})


__all__ = ["GatewayPlan", "plan_from_file", "plan_from_topology"]
