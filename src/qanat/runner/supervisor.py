"""The supervisor: every replica of every service (and the gateway) as processes.

Instance names are ``<service>-<n>`` with the lowest ``n`` not held by a
running *or still draining* instance: a name is the registry id, and reusing
one that is still deregistering would let the old instance's deregistration
remove the new one's registration.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from dataclasses import dataclass

from qanat.errors import ConfigError
from qanat.ports import Registry
from qanat.runner.env import InstanceEnv
from qanat.runner.process import ProcessSpec, Status, Supervised, listen, python
from qanat.topology import Topology

GATEWAY = "gateway"
NO_HEALTH = "-"  # the health column of a process the registry does not know


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A row of ``qanat status``: one process as the supervisor sees it."""

    group: str
    name: str
    status: str
    url: str
    pid: int | None
    restarts: int
    last_exit: int | None
    health: str = NO_HEALTH  # from the registry: passing, warning, critical (or "-")

    def to_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "name": self.name,
            "status": self.status,
            "health": self.health,
            "url": self.url,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


class Supervisor:
    """Runs a topology: starts, restarts, scales and stops its processes."""

    def __init__(
        self,
        topology: Topology,
        *,
        notify: Callable[[str, str], None] = lambda name, msg: None,
        gateway_port: int | None = None,
    ) -> None:
        self.topology = topology
        self.notify = notify
        self.gateway_port = topology.gateway.port if gateway_port is None else gateway_port
        source = topology.path or topology.root / "qanat.yaml"
        self._port_source = f"{source}: gateway.port" if gateway_port is None else "--port"
        self._groups: dict[str, list[Supervised]] = {}
        self._draining: set[str] = set()  # names of instances stopping after a scale-down
        self._lock = asyncio.Lock()

    # -- building process specs ------------------------------------------------

    def _instance_spec(self, service: str, index: int) -> ProcessSpec:
        topo = self.topology
        spec = topo.services[service]
        env = InstanceEnv(
            service=service,
            instance_id=f"{service}-{index}",
            host="127.0.0.1",
            port=0,
            registry=topo.backend_url("registry"),
            config=topo.backend_url("config"),
            events=topo.backend_url("events"),
            database_url=topo.database_url(service),
            version=spec.version,
            tags=spec.tags,
            ttl=spec.ttl,
            drain_timeout=spec.drain_timeout,
            state_dir=str(topo.state_path),
            topology=str(topo.path or topo.root / "qanat.yaml"),
        )
        argv = [
            python(), "-m", "qanat.runner.instance",
            "--app", spec.app, "--fd", "{fd}", "--root", str(topo.root),
            "--drain-timeout", str(spec.drain_timeout),
        ]  # fmt: skip
        return ProcessSpec(
            name=env.instance_id,
            group=service,
            argv=argv,
            env={**spec.env, **env.to_env()},
            log_path=topo.state_path / "logs" / f"{env.instance_id}.log",
            drain_timeout=spec.drain_timeout,
        )

    def _gateway_spec(self) -> ProcessSpec:
        topo = self.topology
        argv = [
            python(), "-m", "qanat.gateway",
            "--topology", str(topo.path or topo.root / "qanat.yaml"),
            "--host", topo.gateway.host, "--port", "{port}",
            # Explicit, so a --state-dir given to 'qanat up' reaches the gateway too.
            "--registry", topo.backend_url("registry"),
            "--config-store", topo.backend_url("config"),
        ]  # fmt: skip
        return ProcessSpec(
            name=GATEWAY,
            group=GATEWAY,
            argv=argv,
            env={
                "QANAT_REGISTRY": topo.backend_url("registry"),
                "QANAT_CONFIG": topo.backend_url("config"),
            },
            log_path=topo.state_path / "logs" / "gateway.log",
            host=topo.gateway.host,
            port=self.gateway_port,
            pass_socket=False,  # the gateway binds its own port (it may run several workers)
            ready_path="/__qanat/ready",
        )

    # -- lifecycle -------------------------------------------------------------

    def gateway_wanted(self) -> bool:
        """Whether this topology runs a gateway (enabled, with at least one route)."""
        return bool(self.topology.gateway.enabled and self.topology.gateway.routes)

    def check_gateway_port(self) -> None:
        """Fail early, before anything starts, when the gateway's port is taken.

        Raises ``ConfigError`` naming the address and how to pick another.
        """
        if not self.gateway_wanted() or self.gateway_port == 0:
            return
        host = self.topology.gateway.host
        try:
            listen(host, self.gateway_port, fallback=False).close()
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            what = "is already in use" if in_use else f"cannot be bound: {exc}"
            raise ConfigError(
                f"the gateway's address {host}:{self.gateway_port} {what}; stop what holds it "
                "or pick another port with 'qanat up --port N' (0 picks a free one)",
                source=self._port_source,
            ) from None

    async def start(self) -> None:
        """Start every replica (dependencies first) and the gateway; do not wait."""
        for service in _dependency_order(self.topology):
            await self.scale(service, self.topology.services[service].replicas)
        if self.gateway_wanted():
            proc = Supervised(self._gateway_spec(), self.notify)
            self._groups[GATEWAY] = [proc]
            proc.start()

    async def wait_ready(self, timeout: float) -> list[str]:
        """Wait until everything is ready; return the names that were not in time."""
        procs = [p for group in self._groups.values() for p in group]
        ready = await asyncio.gather(*(p.wait_ready(timeout) for p in procs))
        return [p.spec.name for p, ok in zip(procs, ready, strict=True) if not ok]

    async def scale(self, service: str, replicas: int) -> list[Supervised]:
        """Run exactly ``replicas`` instances of ``service``; return the ones started.

        Extra instances (the newest first) stop gracefully before this returns.
        """
        if service not in self.topology.services:
            raise KeyError(service)
        started: list[Supervised] = []
        async with self._lock:
            group = self._groups.setdefault(service, [])
            while len(group) < replicas:
                taken = {p.spec.name for p in group} | self._draining
                index = next(i for i in range(len(taken) + 1) if f"{service}-{i}" not in taken)
                proc = Supervised(self._instance_spec(service, index), self.notify)
                group.append(proc)
                started.append(proc)
                proc.start()
            extra = group[replicas:]
            del group[replicas:]
            self._draining.update(p.spec.name for p in extra)
        try:
            await asyncio.gather(*(p.stop() for p in extra))
        finally:
            self._draining.difference_update(p.spec.name for p in extra)
        return started

    def kill(self) -> None:
        """SIGKILL every process now (the second Ctrl-C): no drain, no deregistration."""
        for group in self._groups.values():
            for proc in group:
                proc.kill()

    async def stop(self) -> None:
        """Stop the gateway first (no new traffic), then services in reverse dependency order."""
        for proc in self._groups.pop(GATEWAY, []):
            await proc.stop()
        for service in reversed(_dependency_order(self.topology)):
            await asyncio.gather(*(p.stop() for p in self._groups.pop(service, [])))

    def processes(self, health: dict[str, str] | None = None) -> list[ProcessInfo]:
        """One row per process; ``health`` maps instance names to their registry health."""
        known = health or {}
        rows = []
        for group, procs in self._groups.items():
            for p in procs:
                rows.append(
                    ProcessInfo(
                        group=group,
                        name=p.spec.name,
                        status=str(p.status),
                        url=p.url,
                        pid=p.pid,
                        restarts=p.restarts,
                        last_exit=p.last_exit,
                        health=known.get(p.spec.name, NO_HEALTH),
                    )
                )
        return rows

    async def health(self, registry: Registry) -> dict[str, str]:
        """Each registered instance's health, by instance id ("critical, disabled" when off).

        A registry that cannot answer yields what was read so far: status must not fail.
        """
        out: dict[str, str] = {}
        for service in self.topology.services:
            try:
                async with asyncio.timeout(2.0):
                    found = await registry.discover(service, healthy_only=False)
            except Exception:  # the table still shows the processes; health reads "-"
                continue
            for inst in found:
                out[inst.id] = inst.health.value + ("" if inst.enabled else ", disabled")
        return out

    def all_ready(self) -> bool:
        return all(p.status is Status.READY for g in self._groups.values() for p in g)


def _dependency_order(topology: Topology) -> list[str]:
    """Services with their dependencies first (a cycle falls back to declaration order)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting:
            return
        visiting.add(name)
        for dep in topology.services[name].depends_on:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in topology.services:
        visit(name)
    return order
