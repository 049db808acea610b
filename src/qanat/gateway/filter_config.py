"""A built-in filter's ``config`` mapping, validated against its pydantic model.

The first problem becomes a ``ConfigError`` naming the field, worded as the
topology file's problems are (``qanat._yaml.explain_error``); ``build_filter``
adds where the filter sits (``route 'r' (routes[0]).filters[1].config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from qanat._yaml import explain_error
from qanat.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def filter_config(model: type[M], config: Mapping[str, Any]) -> M:
    """``config`` as ``model``, or a ``ConfigError`` for its first problem."""
    try:
        return model.model_validate(dict(config))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where + ': ' if where else ''}{explain_error(first)}") from None


__all__ = ["filter_config"]
