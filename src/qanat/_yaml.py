"""YAML loading that remembers where each value came from.

Configuration errors must name the file, the line, what is wrong and what is
allowed. PyYAML's composer keeps a mark on every node; we keep the line of
every mapping key and sequence item, keyed by its path, and translate a
pydantic ``ValidationError`` into a ``ConfigError`` pointing at that line.
A document merged from several files (``overlay``: a topology that extends
another) also keeps which file each path came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from qanat.errors import ConfigError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class LocatedDocument:
    """A parsed YAML document plus the line (1-based) of every path in it.

    ``files`` names the file of each path that came from another file than
    ``source`` (see ``overlay``); every other path is in ``source``.
    """

    def __init__(
        self,
        data: Any,
        lines: Mapping[Loc, int],
        source: str,
        files: Mapping[Loc, str] | None = None,
    ) -> None:
        self.data = data
        self.lines = lines
        self.source = source
        self.files: Mapping[Loc, str] = files or {}

    def where(self, loc: Loc) -> str:
        """``file:line`` of the deepest known prefix of ``loc``."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return f"{self.files.get(loc[:end], self.source)}:{line}"
        return self.source

    def sources(self) -> list[str]:
        """Every file a value of this document came from, ``source`` first."""
        return list(dict.fromkeys([self.source, *self.files.values()]))


def parse(text: str, source: str = "<string>") -> LocatedDocument:
    """Parse one YAML document, keeping line numbers; a syntax error becomes a ConfigError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", source=where) from None
    lines: dict[Loc, int] = {}
    if node is None:
        return LocatedDocument({}, lines, source)
    data = _construct(node, (), lines, yaml.SafeLoader(""), source)
    return LocatedDocument(data, lines, source)


def load(path: str | Path) -> LocatedDocument:
    """Read and parse a YAML file; a missing file is a ConfigError naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(p)) from None
    return parse(text, str(p))


def _construct(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], loader: yaml.SafeLoader, source: str
) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)  # scalar keys
            child = (*loc, key)
            if key in out:
                raise ConfigError(
                    f"duplicate key {key!r} in {_fmt(loc)} (first given at line "
                    f"{lines[child]}); give each key once",
                    source=f"{source}:{key_node.start_mark.line + 1}",
                )
            lines[child] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, child, lines, loader, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, (*loc, i), lines, loader, source) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node)


def overlay(base: LocatedDocument, top: LocatedDocument) -> LocatedDocument:
    """``top`` applied over ``base`` as a JSON Merge Patch (RFC 7386), still located.

    Mappings merge key by key; any other value in ``top`` (a list, a scalar)
    replaces the base's whole; a ``null`` in ``top`` deletes the key. Each
    path of the result keeps the file and line its value came from: ``top``'s
    for what ``top`` sets, ``base``'s for what it inherits. Neither input is
    changed; the result's ``source`` is ``top``'s.
    """
    lines: dict[Loc, int] = {}
    files: dict[Loc, str] = {}

    def locate(doc: LocatedDocument, loc: Loc, *, subtree: bool) -> None:
        n = len(loc)
        for path, line in doc.lines.items():
            if path == loc or (subtree and path[:n] == loc):
                lines[path] = line
                files[path] = doc.files.get(path, doc.source)

    def merge(old: Any, new: Any, loc: Loc) -> Any:
        if not isinstance(new, dict):
            locate(top, loc, subtree=True)
            return new
        locate(top, loc, subtree=False)
        inherited: dict[Any, Any] = old if isinstance(old, dict) else {}
        out: dict[Any, Any] = {}
        for key, value in inherited.items():  # the base's order, changed keys in place
            if key not in new:
                locate(base, (*loc, key), subtree=True)
                out[key] = value
            elif new[key] is not None:
                out[key] = merge(value, new[key], (*loc, key))
        for key, value in new.items():
            if key not in inherited and value is not None:
                out[key] = merge(None, value, (*loc, key))
        return out

    return LocatedDocument(merge(base.data, top.data, ()), lines, top.source, files)


def _fmt(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def validate(model: type[M], doc: LocatedDocument, *, at: Loc = ()) -> M:
    """Validate ``doc`` (or the sub-tree at ``at``) against ``model``.

    On failure raise one ConfigError listing every problem as
    ``file:line: field.path: message``.
    """
    data: Any = doc.data
    for part in at:
        data = data[part]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = (*at, *err["loc"])
            problems.append(f"{doc.where(loc)}: {_fmt(loc)}: {explain_error(err)}")
        files = doc.sources()
        extending = f" (extending {', '.join(files[1:])})" if len(files) > 1 else ""
        raise ConfigError(
            f"{len(problems)} problem(s) in {doc.source}{extending}:\n  " + "\n  ".join(problems)
        ) from None


def explain_error(err: Mapping[str, Any]) -> str:
    """One pydantic error in words a config author can act on."""
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see docs for the allowed fields)"
    if kind == "missing":
        return "required field is missing"
    inp = err.get("input")
    if isinstance(inp, str | int | float | bool) and kind not in {"missing"}:
        return f"{msg} (got {inp!r})"
    return msg
