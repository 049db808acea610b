"""Pieces of ``qanat.Service`` that need no service: its name, instance, policies, config.

The lazy config-store forwarder behind ``service.config``, the checks that
run before binding, the ``Instance`` it registers as, the policies read from
``qanat.yaml``, and the shutdown-step wrapper. Kept apart so that
``qanat.runtime.service`` is the lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from qanat.errors import ConfigError
from qanat.policy import Policies, load_policies
from qanat.ports import ConfigStore, Instance
from qanat.runner.env import InstanceEnv
from qanat.topology import load_topology

log = logging.getLogger("qanat.service")


def resolve_name(name: str | None, env: InstanceEnv | None) -> str:
    """The service's name: ``name``, else the env's; a ``ConfigError`` when none or they differ."""
    resolved = name or (env.service if env else None)
    if not resolved:
        raise ConfigError(
            "a Service needs a name: Service(app, 'users'), or run it with 'qanat up'",
            source="qanat.Service",
        )
    if env is not None and name is not None and env.service != name:
        raise ConfigError(
            f"this app says it is {name!r} but qanat.yaml runs it as {env.service!r}; "
            "make the two names match",
            source="qanat.Service",
        )
    return resolved


def check_bindable(config_url: str | None, started: bool, prefix: str) -> None:
    """Refuse ``service.config(prefix, ...)`` with no config store or after the start."""
    if config_url is None:
        raise ConfigError(
            "no config store to bind to: run the service with 'qanat up' "
            "(QANAT_CONFIG) or pass Service(..., config_url='sqlite:///.qanat/control.db')",
            source=f"service.config({prefix!r})",
        )
    if started:
        raise ConfigError(
            "bind configuration before the service starts (at import time)",
            source=f"service.config({prefix!r})",
        )


def policies_of(env: InstanceEnv | None) -> Policies:
    """The policies in the topology ``env`` names (the defaults when run outside qanat)."""
    path = env.topology if env else ""
    return load_policies(load_topology(path).policies if path else {})


def instance_for(env: InstanceEnv, name: str, tags: tuple[str, ...],
                 metadata: dict[str, str], version: str) -> Instance:
    """The ``Instance`` this service registers as, at the address ``qanat up`` gave it."""
    return Instance(
        id=env.instance_id,
        service=name,
        address=env.host,
        port=env.port,
        tags=tags,
        metadata=metadata,
        version=version,
    )


async def quietly(callback: Callable[[], Any]) -> None:
    """Run a shutdown step; a failure is logged and does not stop the next steps."""
    try:
        result = callback()
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        log.exception("shutdown step %r failed", callback)


class LazyConfigStore:
    """Forwards to the config store opened when the service starts.

    ``service.config()`` runs at import time, before there is a loop to open
    the store in; the ``BoundConfig`` it returns holds this forwarder.
    """

    def __init__(self) -> None:
        self.store: ConfigStore | None = None

    def __getattr__(self, name: str) -> Any:
        if self.store is None:
            raise RuntimeError(f"the config store opens when the service starts (.{name})")
        return getattr(self.store, name)


__all__ = [
    "LazyConfigStore",
    "check_bindable",
    "instance_for",
    "policies_of",
    "quietly",
    "resolve_name",
]
