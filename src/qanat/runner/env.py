"""The environment contract between the runner and a service instance.

``qanat up`` (and the Kubernetes manifests) set these; ``qanat.Service``
reads them. A service run by hand without them falls back to defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InstanceEnv:
    service: str
    instance_id: str
    host: str
    port: int
    registry: str
    config: str
    events: str
    database_url: str
    version: str = "v1"
    tags: tuple[str, ...] = ()
    ttl: float = 10.0
    drain_timeout: float = 10.0
    state_dir: str = ".qanat"
    topology: str = ""  # path of qanat.yaml: policies for outgoing calls

    def to_env(self) -> dict[str, str]:
        return {
            "QANAT_SERVICE": self.service,
            "QANAT_INSTANCE_ID": self.instance_id,
            "QANAT_HOST": self.host,
            "QANAT_PORT": str(self.port),
            "QANAT_REGISTRY": self.registry,
            "QANAT_CONFIG": self.config,
            "QANAT_EVENTS": self.events,
            "QANAT_DATABASE_URL": self.database_url,
            "QANAT_VERSION": self.version,
            "QANAT_TAGS": ",".join(self.tags),
            "QANAT_TTL": str(self.ttl),
            "QANAT_DRAIN_TIMEOUT": str(self.drain_timeout),
            "QANAT_STATE_DIR": self.state_dir,
            "QANAT_TOPOLOGY": self.topology,
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InstanceEnv | None:
        """The instance's settings, or None when not started by a qanat runner."""
        env = os.environ if environ is None else environ
        if "QANAT_SERVICE" not in env or "QANAT_PORT" not in env:
            return None
        tags = tuple(t for t in env.get("QANAT_TAGS", "").split(",") if t)
        return cls(
            service=env["QANAT_SERVICE"],
            instance_id=env.get("QANAT_INSTANCE_ID", env["QANAT_SERVICE"] + "-0"),
            host=env.get("QANAT_HOST", "127.0.0.1"),
            port=int(env["QANAT_PORT"]),
            registry=env.get("QANAT_REGISTRY", "sqlite:///.qanat/control.db"),
            config=env.get(
                "QANAT_CONFIG", env.get("QANAT_REGISTRY", "sqlite:///.qanat/control.db")
            ),
            events=env.get("QANAT_EVENTS", "sqlite:///.qanat/events.db"),
            database_url=env.get("QANAT_DATABASE_URL", ""),
            version=env.get("QANAT_VERSION", "v1"),
            tags=tags,
            ttl=float(env.get("QANAT_TTL", "10")),
            drain_timeout=float(env.get("QANAT_DRAIN_TIMEOUT", "10")),
            state_dir=env.get("QANAT_STATE_DIR", ".qanat"),
            topology=env.get("QANAT_TOPOLOGY", ""),
        )
