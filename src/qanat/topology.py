"""The topology file, ``qanat.yaml``: one file describing a whole system.

It names the services (an ASGI app each, replicas, its own database URL,
environment), the gateway and its routes, named resilience policies bound to
targets (in the manner of Dapr's resiliency spec), and the backends, each a
URL. It is validated on load; an error names the file, the line, what is
wrong and what is allowed. A file may extend another and change only what
differs (``extends: qanat.yaml``; see ``qanat.topology_extends``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from qanat import _yaml
from qanat.core.duration import parse_duration
from qanat.errors import ConfigError
from qanat.topology_extends import DEFAULT_FILE, load_layered

Duration = Annotated[float, BeforeValidator(parse_duration)]
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_APP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_BACKEND_SCHEMES = ("memory://", "sqlite://", "etcd://", "nats://", "redis://", "postgresql")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backends(_Strict):
    """Every backend is a URL; the defaults are the embedded ones under ``state_dir``."""

    registry: str = "sqlite:///{state}/control.db"
    config: str | None = None  # defaults to the registry URL
    events: str = "sqlite:///{state}/events.db"

    @field_validator("registry", "config", "events")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(_BACKEND_SCHEMES):
            allowed = ", ".join(s.rstrip(":/") for s in _BACKEND_SCHEMES)
            raise ValueError(f"unknown backend URL {url!r}; allowed schemes: {allowed}")
        return url


class HealthCheckSpec(_Strict):
    path: str = "/health"
    interval: Duration = 5.0
    timeout: Duration = 2.0
    deregister_critical_after: Duration = 30.0


class ServiceSpec(_Strict):
    """One service: an ASGI app run as ``replicas`` processes."""

    app: str = Field(description="import path of the ASGI app, 'package.module:attribute'")
    replicas: int = Field(default=1, ge=0, le=64)
    database: str | None = None  # default sqlite+aiosqlite:///{state}/<service>.db
    env: dict[str, str] = Field(default_factory=dict)
    version: str = "v1"
    tags: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    health: HealthCheckSpec = HealthCheckSpec()
    ttl: Duration = 10.0  # registry lease
    drain_timeout: Duration = 10.0  # SIGTERM: finish in-flight requests within this

    @field_validator("app")
    @classmethod
    def _app_path(cls, value: str) -> str:
        if not _APP.match(value):
            raise ValueError(
                f"expected 'package.module:attribute', e.g. 'users.app:app', got {value!r}"
            )
        return value


class GatewaySpec(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    admin_port: int | None = Field(default=None, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    routes: list[dict[str, Any]] = Field(default_factory=list)
    limits: dict[str, Any] = Field(default_factory=dict)  # gateway.hardening.Limits fields


class Topology(_Strict):
    """A whole system, as described by ``qanat.yaml``."""

    name: str
    state_dir: str = ".qanat"
    backends: Backends = Backends()
    services: dict[str, ServiceSpec] = Field(default_factory=dict)
    gateway: GatewaySpec = GatewaySpec()
    policies: dict[str, Any] = Field(default_factory=dict)  # see qanat.policy

    # Where the file was loaded from; relative paths resolve against its directory.
    root: Path = Field(default=Path("."), exclude=True)
    # The file loaded (an overlay, not the file it extends); None when built in code.
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a name is lowercase letters, digits and '-', starting with a letter")
        return value

    @field_validator("services")
    @classmethod
    def _service_names(cls, services: dict[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        for name in services:
            if not _NAME.match(name):
                raise ValueError(
                    f"service name {name!r}: lowercase letters, digits and '-', "
                    "starting with a letter"
                )
        return services

    @model_validator(mode="after")
    def _dependencies_exist(self) -> Topology:
        for name, spec in self.services.items():
            for dep in spec.depends_on:
                if dep not in self.services:
                    known = ", ".join(sorted(self.services)) or "none"
                    raise ValueError(
                        f"service {name!r} depends on {dep!r}, which is not defined "
                        f"(services: {known})"
                    )
        return self

    @property
    def state_path(self) -> Path:
        path = Path(self.state_dir)
        return path if path.is_absolute() else self.root / path

    def backend_url(self, which: str) -> str:
        """The URL of a backend with ``{state}`` filled in ("registry", "config", "events")."""
        url = getattr(self.backends, which) or self.backends.registry
        return str(url).replace("{state}", str(self.state_path))

    def database_url(self, service: str) -> str:
        spec = self.services[service]
        url = spec.database or f"sqlite+aiosqlite:///{{state}}/{service}.db"
        return url.replace("{state}", str(self.state_path))


def load_topology(path: str | Path) -> Topology:
    """Load and validate a topology file (a directory means its ``qanat.yaml``).

    A file with ``extends:`` is merged over the file it names first; ``root``
    is the directory of the file given here, not of the one it extends.
    """
    p = Path(path)
    if p.is_dir():
        p = p / DEFAULT_FILE
    doc = load_layered(p)
    topo = _yaml.validate(Topology, doc)
    _validate_routes(doc, topo)
    return topo.model_copy(update={"root": p.parent.resolve(), "path": p.resolve()})


def _validate_routes(doc: _yaml.LocatedDocument, topo: Topology) -> None:
    """Gateway routes are checked at load time too, with their file and line."""
    from qanat.gateway.config import _validate_route

    for i, raw in enumerate(topo.gateway.routes):
        _validate_route(doc, ("gateway", "routes", i), i, raw)
        upstream = raw.get("upstream") or {}
        service = upstream.get("service") if isinstance(upstream, dict) else None
        if service is not None and service not in topo.services:
            known = ", ".join(sorted(topo.services)) or "none"
            where = doc.where(("gateway", "routes", i, "upstream"))
            raise ConfigError(
                f"route {raw.get('name')!r} sends to service {service!r}, which is not "
                f"defined (services: {known})",
                source=where,
            )
