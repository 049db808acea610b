"""The response a ``ServiceClient`` call returns: complete, immutable, with its provenance."""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class ClientResponse:
    """A complete response: status, headers, body, and where it came from.

    Not frozen on purpose: one is built per call, and a frozen dataclass's
    ``__init__`` costs three times as much. Treat it as read-only.

    ``headers`` are (name, value) byte pairs as received, in order;
    ``instance`` is the id of the instance that answered; ``attempts`` counts
    the attempts the call made, this one included (1 = no retry).
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes
    instance: str
    attempts: int

    def json(self) -> Any:
        """The body parsed as JSON (raises ``json.JSONDecodeError`` if it is not)."""
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None

    @property
    def ok(self) -> bool:
        """True for a status below 400."""
        return self.status < 400


__all__ = ["ClientResponse"]
