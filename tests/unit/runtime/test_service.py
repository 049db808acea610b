"""qanat.Service: probes, lifespan order, registration, health reporting and config binding.

Apps run in the test's own event loop: the wrapped lifespan is entered
directly and requests go through ``httpx.ASGITransport``; one test speaks the
ASGI lifespan protocol to the app, as a server does.
Registries are real ``memory://`` (or SQLite) backends, never mocks.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette

from qanat.backends import open_config_store, open_registry
from qanat.errors import ConfigError
from qanat.ports import Health, Instance, Registry
from qanat.runner.env import InstanceEnv
from qanat.runtime.service import Service, running_services
from qanat.testing import eventually

DEADLINE = 10.0


pytestmark = pytest.mark.usefixtures("restore_logging")  # Service.start configures logging

def memory_url() -> str:
    return f"memory://{uuid.uuid4().hex}"


def instance_env(registry: str, tmp_path: Path, **kw: Any) -> InstanceEnv:
    fields: dict[str, Any] = {
        "service": "users",
        "instance_id": "users-0",
        "host": "127.0.0.1",
        "port": 8123,
        "registry": registry,
        "config": registry,
        "events": "",
        "database_url": "",
        "state_dir": str(tmp_path),
    }
    return InstanceEnv(**(fields | kw))


def make_service(app: Starlette, name: str = "users", **kw: Any) -> Service:
    return Service(app, name, tracer_provider=TracerProvider(), **kw)


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app started through its (wrapped) lifespan, and a client to call it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


async def health_of(registry: Registry, service: str) -> list[tuple[str, Health]]:
    return [(i.id, i.health) for i in await registry.discover(service, healthy_only=False)]


# -- probes -------------------------------------------------------------------------------


async def test_health_is_200_and_ready_is_200_once_started() -> None:
    """/health answers 200; /ready answers 200 once the lifespan has started the service."""
    app = FastAPI()
    make_service(app, json_logs=False)
    async with running(app) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "service": "users"})


async def test_ready_is_503_before_start_and_while_draining() -> None:
    """/ready is 503 with 'starting' before the lifespan ran and with 'draining' after drain()."""
    app = FastAPI()
    service = make_service(app, json_logs=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as cold:
        before = await cold.get("/ready")
    assert before.status_code == 503
    assert before.json()["reasons"] == ["starting"]
    async with running(app) as client:
        await service.drain()
        draining = await client.get("/ready")
        still_alive = await client.get("/health")
    assert draining.status_code == 503
    assert draining.json()["reasons"] == ["draining"]
    assert still_alive.status_code == 200


async def test_ready_waits_for_a_dependency_to_have_an_instance(tmp_path: Path) -> None:
    """A dependency with no instance makes /ready 503 naming it; its first instance makes 200."""
    url = memory_url()
    app = FastAPI()
    service = make_service(app, depends_on=["catalog"], registry_url=url, json_logs=False)
    async with running(app) as client:
        first = await client.get("/ready")
        registry = await open_registry(url)
        await registry.register(Instance("catalog-0", "catalog", "127.0.0.1", 9001), ttl=30)

        async def ready() -> bool:
            return (await client.get("/ready")).status_code == 200

        await eventually(ready, timeout=DEADLINE, what="ready after catalog registered")
        await registry.close()
    assert first.status_code == 503
    assert first.json()["reasons"] == ["no instance of catalog available"]
    assert service.readiness() == ["draining"]


async def test_a_dependency_without_a_registry_is_a_reason() -> None:
    """With depends_on but no registry, /ready says the dependency cannot be discovered."""
    app = FastAPI()
    make_service(app, depends_on=["catalog"], json_logs=False)
    async with running(app) as client:
        ready = await client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["no registry configured to discover catalog"]


async def test_platform_routes_are_not_in_the_openapi_schema() -> None:
    """/health, /ready and /metrics stay out of the app's OpenAPI document."""
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    make_service(app, json_logs=False)
    assert set(app.openapi()["paths"]) == {"/users/{user_id}"}


async def test_platform_routes_win_over_a_catch_all_route() -> None:
    """An app's catch-all route does not shadow /ready."""
    app = FastAPI()

    @app.get("/{anything:path}")
    async def catch_all(anything: str) -> dict[str, str]:
        return {"caught": anything}

    make_service(app, json_logs=False)
    async with running(app) as client:
        ready = await client.get("/ready")
        other = await client.get("/elsewhere")
    assert ready.json()["status"] == "ready"
    assert other.json() == {"caught": "elsewhere"}


# -- lifespan -----------------------------------------------------------------------------


async def test_our_lifespan_wraps_the_apps(tmp_path: Path) -> None:
    """The app's startup runs with the platform up but not yet registered or ready; its
    shutdown runs after the instance is deregistered, while the registry is still open."""
    url = memory_url()
    seen: list[tuple[str, object]] = []
    service: Service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert service.registry is not None
        seen.append(("startup: reasons", service.readiness()))
        seen.append(("startup: registered", await health_of(service.registry, "users")))
        yield
        seen.append(("shutdown: reasons", service.readiness()))
        seen.append(("shutdown: registered", await health_of(service.registry, "users")))

    app = FastAPI(lifespan=lifespan)
    service = make_service(app, env=instance_env(url, tmp_path), json_logs=False)
    async with running(app):
        seen.append(("running: reasons", service.readiness()))
    assert seen == [
        ("startup: reasons", ["starting", "not registered"]),
        ("startup: registered", []),
        ("running: reasons", []),
        ("shutdown: reasons", ["draining"]),
        ("shutdown: registered", []),
    ]
    assert service not in running_services()


async def test_the_asgi_lifespan_protocol_drives_a_starlette_app() -> None:
    """Under the ASGI lifespan protocol, a plain Starlette app's startup and shutdown still
    run, inside the platform's."""
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    app = Starlette(routes=[], lifespan=lifespan)
    service = make_service(app, "plain", json_logs=False)
    service.on_stop(lambda: events.append("service stopped"))
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    replies: list[str] = []
    answered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(reply: dict[str, Any]) -> None:
        replies.append(reply["type"])
        answered.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    server = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    await asyncio.wait_for(answered.wait(), DEADLINE)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/ready")).status_code == 200
    events.append("served")
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(server, DEADLINE)
    assert replies == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["app startup", "served", "app shutdown", "service stopped"]


async def test_a_failing_app_startup_still_stops_the_platform(tmp_path: Path) -> None:
    """When the app's own startup raises, nothing is registered and the service is stopped."""
    url = memory_url()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield

    app = FastAPI(lifespan=lifespan)
    service = make_service(app, env=instance_env(url, tmp_path), json_logs=False)
    with pytest.raises(RuntimeError, match="database unreachable"):
        async with running(app):
            pass
    registry = await open_registry(url)
    assert await health_of(registry, "users") == []
    await registry.close()
    assert service not in running_services()


# -- registration -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_registers_with_address_tags_and_version_then_leaves(
    backend: str, tmp_path: Path
) -> None:
    """Run with an InstanceEnv, the instance is registered with its address, port, tags and
    version after startup, and gone after shutdown."""
    url = memory_url() if backend == "memory" else f"sqlite:///{tmp_path}/control.db"
    env = instance_env(url, tmp_path, tags=("blue", "eu"), version="v2", port=8124)
    app = FastAPI()
    make_service(app, env=env, json_logs=False)
    observer = await open_registry(url)
    try:
        async with running(app):
            [inst] = await observer.discover("users")
        after = await observer.discover("users", healthy_only=False)
    finally:
        await observer.close()
    assert (inst.id, inst.address, inst.port) == ("users-0", "127.0.0.1", 8124)
    assert (inst.tags, inst.version) == (("blue", "eu"), "v2")
    assert after == []


async def test_a_missing_dependency_is_reported_as_warning_health(tmp_path: Path) -> None:
    """The TTL health check reports 'warning' (still routable) while a dependency is missing."""
    url = memory_url()
    app = FastAPI()
    make_service(app, depends_on=["catalog"], env=instance_env(url, tmp_path), json_logs=False)
    observer = await open_registry(url)
    try:
        async with running(app):

            async def warned() -> bool:
                return await health_of(observer, "users") == [("users-0", Health.WARNING)]

            await eventually(warned, timeout=DEADLINE, what="health turns warning")
            [inst] = await observer.discover("users")  # warning instances stay routable
    finally:
        await observer.close()
    assert inst.id == "users-0"


async def test_a_ready_instance_reports_passing_health(tmp_path: Path) -> None:
    """The TTL check reports passing again on its next round after the status was changed."""
    url = memory_url()
    app = FastAPI()
    env = instance_env(url, tmp_path, ttl=1.0)  # reports every 1/3 s
    make_service(app, env=env, json_logs=False)
    observer = await open_registry(url)
    try:
        async with running(app):
            await observer.set_health("users", "users-0", Health.CRITICAL, "forced")

            async def passing() -> bool:
                return await health_of(observer, "users") == [("users-0", Health.PASSING)]

            await eventually(passing, timeout=DEADLINE, what="health back to passing")
    finally:
        await observer.close()


# -- names and configuration ---------------------------------------------------------------


def test_a_name_is_required_without_a_runner() -> None:
    """Service(app) with no name and no QANAT_* environment is a ConfigError saying how to fix."""
    with pytest.raises(ConfigError, match=re.escape("Service(app, 'users')")):
        Service(FastAPI(), env=None)


def test_the_name_must_match_the_runners(tmp_path: Path) -> None:
    """A name different from the one qanat.yaml runs the app as is refused."""
    env = instance_env(memory_url(), tmp_path)
    with pytest.raises(ConfigError, match=re.escape("'orders' but qanat.yaml runs it as 'users'")):
        Service(FastAPI(), "orders", env=env)


def test_the_name_comes_from_the_runner(tmp_path: Path) -> None:
    """Without a name, the service is named by QANAT_SERVICE."""
    assert Service(FastAPI(), env=instance_env(memory_url(), tmp_path)).name == "users"


def test_only_starlette_apps_are_accepted() -> None:
    """Something that is not a Starlette/FastAPI app is a ConfigError."""
    with pytest.raises(ConfigError, match="expected a FastAPI or Starlette app"):
        Service(object(), "users")  # type: ignore[arg-type]


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True)
    max_items: int = 10
    mode: str = "normal"


async def test_config_binds_to_the_config_center_for_the_services_life() -> None:
    """service.config() loads at startup, follows changes while running, stops with it."""
    url = memory_url()
    store = await open_config_store(url)
    await store.set("config/users/max_items", "25")
    app = FastAPI()
    service = make_service(app, config_url=url, json_logs=False)
    limits = service.config("config/users", Limits)
    async with running(app):
        loaded = limits.current
        revision = await store.set("config/users/mode", "strict")
        await limits.wait_for_revision(revision)
        changed = limits.current
    await store.set("config/users/max_items", "99")
    assert loaded == Limits(max_items=25)
    assert changed == Limits(max_items=25, mode="strict")
    assert limits.current == changed  # stopped with the service: later writes are not seen
    await store.close()


async def test_invalid_config_fails_the_startup() -> None:
    """A config that does not validate fails the service's startup with a located error."""
    url = memory_url()
    store = await open_config_store(url)
    await store.set("config/users/max_items", "many")
    app = FastAPI()
    service = make_service(app, config_url=url, json_logs=False)
    service.config("config/users", Limits)
    with pytest.raises(ConfigError, match="config/users/max_items"):
        async with running(app):
            pass
    await store.close()


def test_config_needs_a_config_store() -> None:
    """service.config() without a config URL says how to provide one."""
    service = make_service(FastAPI(), json_logs=False)
    with pytest.raises(ConfigError, match="config_url="):
        service.config("config/users", Limits)
