"""The supervisor's plan (order, specs, names) and its checks, with stand-in instances."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.backends import open_registry
from qanat.errors import ConfigError
from qanat.ports import Health, Instance
from qanat.runner.process import ProcessSpec
from qanat.runner.supervisor import GATEWAY, Supervisor, _dependency_order
from qanat.testing import eventually
from qanat.topology import Topology, load_topology

FAKE = Path(__file__).parent / "fake_instance.py"
ROUTES = """
gateway:
  routes:
    - name: a
      match: {prefix: /a}
      upstream: {kind: service, service: a}
"""


def topology(tmp_path: Path, services: str, extra: str = "") -> Topology:
    (tmp_path / "qanat.yaml").write_text(f"name: t\nservices:\n{services}{extra}")
    return load_topology(tmp_path)


@st.composite
def dags(draw: st.DrawFn) -> Topology:
    """Topologies whose depends_on form a DAG (each service depends on earlier-named ones)."""
    n = draw(st.integers(1, 8))
    names = [f"s{i}" for i in range(n)]
    services = {}
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        services[name] = {"app": "m:app", "depends_on": deps}
    order = draw(st.permutations(names))  # declaration order must not matter
    return Topology.model_validate({"name": "t", "services": {k: services[k] for k in order}})


@given(dags())
def test_dependencies_start_first(topo: Topology) -> None:
    """Every service appears once, after everything it depends on."""
    order = _dependency_order(topo)
    assert sorted(order) == sorted(topo.services)
    for name, spec in topo.services.items():
        assert all(order.index(dep) < order.index(name) for dep in spec.depends_on)


def test_instance_spec_carries_the_platform_settings(tmp_path: Path) -> None:
    """An instance learns its name, port placeholder, backends, database and state from env."""
    topo = topology(tmp_path, "  users: {app: users.app:app, ttl: 3s, env: {X: 'y'}}\n")
    topo = topo.model_copy(update={"state_dir": str(tmp_path / "elsewhere")})
    spec = Supervisor(topo)._instance_spec("users", 2)
    state = tmp_path / "elsewhere"
    assert spec.name == "users-2" and spec.group == "users"
    assert spec.env["QANAT_INSTANCE_ID"] == "users-2"
    assert spec.env["QANAT_REGISTRY"] == f"sqlite:///{state}/control.db"
    assert spec.env["QANAT_DATABASE_URL"] == f"sqlite+aiosqlite:///{state}/users.db"
    assert spec.env["QANAT_STATE_DIR"] == str(state)
    assert spec.env["QANAT_TTL"] == "3.0" and spec.env["X"] == "y"
    assert spec.log_path == state / "logs" / "users-2.log"
    assert "{fd}" in spec.argv and spec.argv[spec.argv.index("--app") + 1] == "users.app:app"


def test_gateway_runs_only_with_routes_and_gets_the_backends(tmp_path: Path) -> None:
    """No routes: no gateway. With routes: the topology, port and backend URLs on its command."""
    assert not Supervisor(topology(tmp_path, "  a: {app: a.app:app}\n")).gateway_wanted()
    topo = topology(tmp_path, "  a: {app: a.app:app}\n", ROUTES)
    sup = Supervisor(topo, gateway_port=9999)
    spec = sup._gateway_spec()
    assert sup.gateway_wanted() and spec.port == 9999 and not spec.pass_socket
    assert spec.argv[spec.argv.index("--registry") + 1] == topo.backend_url("registry")
    assert spec.argv[spec.argv.index("--topology") + 1] == str(tmp_path / "qanat.yaml")
    assert spec.ready_path == "/__qanat/ready"


def test_a_taken_gateway_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A port held by another program: a ConfigError naming the address and the way out."""
    topo = topology(tmp_path, "  a: {app: a.app:app}\n", ROUTES)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            Supervisor(topo, gateway_port=port).check_gateway_port()
    message = str(caught.value)
    assert f"127.0.0.1:{port} is already in use" in message and "--port" in message
    Supervisor(topo, gateway_port=port).check_gateway_port()  # free again: no error


async def test_health_comes_from_the_registry(tmp_path: Path) -> None:
    """Each registered instance's health by id; disabled ones say so; others are absent."""
    topo = topology(tmp_path, "  a: {app: a.app:app}\n")
    registry = await open_registry("memory://runner-health")
    try:
        for i in range(2):
            inst = Instance(id=f"a-{i}", service="a", address="127.0.0.1", port=8000 + i)
            await registry.register(inst)
        await registry.set_health("a", "a-1", Health.CRITICAL)
        await registry.set_enabled("a", "a-1", False)
        assert await Supervisor(topo).health(registry) == {
            "a-0": "passing",
            "a-1": "critical, disabled",
        }
    finally:
        await registry.close()


class FakeSupervisor(Supervisor):
    """Runs the stand-in instance instead of ``qanat.runner.instance``."""

    def _instance_spec(self, service: str, index: int) -> ProcessSpec:
        spec = super()._instance_spec(service, index)
        spec.argv = [sys.executable, str(FAKE), "--fd", "{fd}"]
        spec.env = {**spec.env, "FAKE_MODE": "slow-term", "FAKE_TERM_SECONDS": "1"}
        return spec


async def test_a_name_is_not_reused_while_its_instance_drains(tmp_path: Path) -> None:
    """Scaling up while an instance drains gives the new one a fresh name (registry id)."""
    sup = FakeSupervisor(topology(tmp_path, "  a: {app: a.app:app, replicas: 2}\n"))
    await sup.start()
    try:
        assert await sup.wait_ready(15) == []
        down = asyncio.create_task(sup.scale("a", 1))  # a-1 drains for a second
        # until the scale-down began: a-1 left the table, still draining
        await eventually(lambda: [p.name for p in sup.processes()] == ["a-0"], timeout=15,
                         what=lambda: f"only a-0 listed, not {sup.processes()}")
        started = await sup.scale("a", 2)
        assert [p.spec.name for p in started] == ["a-2"]
        await down
        assert [p.name for p in sup.processes()] == ["a-0", "a-2"]
        started = await sup.scale("a", 3)  # a-1 is free again
        assert [p.spec.name for p in started] == ["a-1"]
    finally:
        await sup.stop()
    assert sup.processes() == []


async def test_scale_rejects_an_unknown_service(tmp_path: Path) -> None:
    """Only services of the topology can be scaled."""
    sup = Supervisor(topology(tmp_path, "  a: {app: a.app:app}\n"))
    with pytest.raises(KeyError):
        await sup.scale("nope", 1)
    assert GATEWAY not in {p.group for p in sup.processes()}


def test_an_override_file_is_what_the_gateway_and_instances_read(tmp_path: Path) -> None:
    """``qanat up over.yaml`` (extends qanat.yaml): the processes get over.yaml, not the base."""
    topology(tmp_path, "  a: {app: a.app:app}\n", ROUTES)
    over = tmp_path / "over.yaml"
    over.write_text("extends: qanat.yaml\ngateway: {port: 0}\n")
    sup = Supervisor(load_topology(over), gateway_port=9999)
    gateway = sup._gateway_spec()
    assert gateway.argv[gateway.argv.index("--topology") + 1] == str(over)
    assert sup._instance_spec("a", 0).env["QANAT_TOPOLOGY"] == str(over)
