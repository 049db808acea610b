"""``extends:``: a topology file that changes only what differs from another.

A file whose top level has ``extends: qanat.yaml`` is that file with its own
keys applied over it, by the rules of JSON Merge Patch (RFC 7386):

- mappings merge key by key, at any depth (``services.users.database``
  alone changes one field of one service);
- any other value (a list such as ``gateway.routes`` or ``depends_on``, a
  string, a number) replaces the base's whole;
- ``null`` deletes the key, so the field takes its default.

The path is relative to the directory of the file that names it (a directory
means its ``qanat.yaml``); the base may extend another file in turn. Only the
merged result is validated, and each value keeps its own file and line, so an
error points into whichever file gave the value. A base that is missing, a
chain that comes back to a file already in it, or an ``extends`` that is not a
path is an error at the ``extends`` line.
"""

from __future__ import annotations

from pathlib import Path

from qanat import _yaml
from qanat.errors import ConfigError

EXTENDS = "extends"
DEFAULT_FILE = "qanat.yaml"


def load_layered(path: Path) -> _yaml.LocatedDocument:
    """The topology document at ``path``, over every file it extends (see the module doc)."""
    return _load(path, ())


def _load(path: Path, chain: tuple[tuple[Path, Path], ...]) -> _yaml.LocatedDocument:
    """``chain``: (resolved, as-named) of every file that extends this one, outermost first."""
    doc = _yaml.load(path)
    if not isinstance(doc.data, dict):
        raise ConfigError(
            "the topology must be a mapping with 'name' and 'services'", source=str(path)
        )
    if EXTENDS not in doc.data:
        return doc
    chain = (*chain, (path.resolve(), path))
    base_path = _base_path(doc, path)
    seen = [resolved for resolved, _ in chain]
    if base_path.resolve() in seen:
        files = [str(named) for _, named in chain[seen.index(base_path.resolve()):]]
        cycle = " -> ".join([*files, str(base_path)])
        raise ConfigError(
            f"extends: a cycle ({cycle}); a file cannot extend itself, directly or "
            "through the files it extends",
            source=doc.where((EXTENDS,)),
        )
    return _yaml.overlay(_load(base_path, chain), _without_extends(doc))


def _base_path(doc: _yaml.LocatedDocument, path: Path) -> Path:
    """The file ``doc`` (read from ``path``) extends, which must exist."""
    value = doc.data[EXTENDS]
    where = doc.where((EXTENDS,))
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"extends: expected the path of the topology file to extend, relative to this "
            f"file's directory (e.g. 'extends: {DEFAULT_FILE}'), got {value!r}",
            source=where,
        )
    base = path.parent / value
    if base.is_dir():
        base = base / DEFAULT_FILE
    if not base.is_file():
        raise ConfigError(
            f"extends: {base} not found (the path is relative to the directory of "
            f"{path.name}, {path.parent.resolve()})",
            source=where,
        )
    return base


def _without_extends(doc: _yaml.LocatedDocument) -> _yaml.LocatedDocument:
    """``doc`` without its top-level ``extends`` key (the base is not part of the patch)."""
    data = {key: value for key, value in doc.data.items() if key != EXTENDS}
    lines = {loc: line for loc, line in doc.lines.items() if loc[:1] != (EXTENDS,)}
    return _yaml.LocatedDocument(data, lines, doc.source, doc.files)
