"""What the health checker's tests share: wait until the registry shows an instance's health."""

from __future__ import annotations

from qanat.ports import Health, Registry
from qanat.testing import eventually

SERVICE = "api"


async def until_health(
    registry: Registry, iid: str, health: Health | None, timeout: float = 5.0
) -> None:
    """Wait (``qanat.testing.eventually``) until instance ``iid`` of ``api`` has ``health``.

    ``None`` waits until the instance is gone. The failure names the health last seen.
    """
    last: list[Health | None] = [None]

    async def reached() -> bool:
        found = {i.id: i.health for i in await registry.discover(SERVICE, healthy_only=False)}
        last[0] = found.get(iid)
        return last[0] is health

    await eventually(
        reached,
        timeout=timeout,
        what=lambda: f"{SERVICE}/{iid} to have health {health}; it has {last[0]}",
    )
