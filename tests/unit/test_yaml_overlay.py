"""``_yaml.overlay``: JSON Merge Patch (RFC 7386) over located documents, as properties."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from qanat import _yaml
from qanat.errors import ConfigError

scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"])
keys = st.sampled_from(["a", "b", "c", "d"])  # few, so that base and patch share keys
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=4)


def located(data: dict[str, Any], source: str) -> _yaml.LocatedDocument:
    """``data`` written as block YAML and parsed back, so every path has a line."""
    return _yaml.parse(yaml.safe_dump(data, default_flow_style=False), source)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, MergePatch(Target, Patch), transcribed."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def paths(value: Any, loc: _yaml.Loc = ()) -> set[_yaml.Loc]:
    """Every path in ``value``: itself, each mapping key and each list item, recursively."""
    out = {loc}
    if isinstance(value, dict):
        for key, item in value.items():
            out |= paths(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out |= paths(item, (*loc, i))
    return out


@settings(max_examples=100, deadline=None)
@given(documents, documents)
def test_overlay_is_rfc_7386_merge_patch(base: dict[str, Any], patch: dict[str, Any]) -> None:
    """The merged data is what the RFC's own algorithm gives, and no input is changed."""
    base_doc, top_doc = located(base, "base.yaml"), located(patch, "top.yaml")
    before = (yaml.safe_dump(base_doc.data), yaml.safe_dump(top_doc.data))
    assert _yaml.overlay(base_doc, top_doc).data == merge_patch(base, patch)
    assert (yaml.safe_dump(base_doc.data), yaml.safe_dump(top_doc.data)) == before


@settings(max_examples=100, deadline=None)
@given(documents, documents)
def test_overlay_is_idempotent(base: dict[str, Any], patch: dict[str, Any]) -> None:
    """Applying the same patch twice changes nothing more than applying it once."""
    top = located(patch, "top.yaml")
    once = _yaml.overlay(located(base, "base.yaml"), top)
    assert _yaml.overlay(once, top).data == once.data


@settings(max_examples=100, deadline=None)
@given(documents, documents)
def test_every_merged_path_is_located_in_the_file_that_gave_it(
    base: dict[str, Any], patch: dict[str, Any]
) -> None:
    """Each path of the result has a line, in the patch when the patch has it, else the base."""
    base_doc, top_doc = located(base, "base.yaml"), located(patch, "top.yaml")
    merged = _yaml.overlay(base_doc, top_doc)
    assert set(merged.lines) == paths(merged.data)
    for loc in merged.lines:
        origin = top_doc if loc in top_doc.lines else base_doc
        assert merged.where(loc) == origin.where(loc), loc


def test_a_chain_keeps_the_file_of_each_layer() -> None:
    """Overlaying a merged document again still points inherited values at their own file."""
    first = _yaml.overlay(located({"a": 1, "b": 1}, "c.yaml"), located({"b": 2}, "b.yaml"))
    second = _yaml.overlay(first, located({"c": 3}, "a.yaml"))
    assert [second.where((k,)) for k in ("a", "b", "c")] == ["c.yaml:1", "b.yaml:1", "a.yaml:1"]
    assert second.sources() == ["a.yaml", "c.yaml", "b.yaml"]


def test_duplicate_key_names_file_line_and_the_first_one() -> None:
    """A key given twice is located at the second, and the message names the first's line."""
    with pytest.raises(ConfigError) as info:
        _yaml.parse("name: shop\nservices:\n  a: 1\n  b: 2\n  a: 3\n", "t.yaml")
    assert str(info.value) == (
        "t.yaml:5: duplicate key 'a' in services (first given at line 3); give each key once"
    )
