"""Path normalisation: RFC 3986 dot segments, percent-encoding rules, traversal attacks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qanat.gateway.hardening import RequestRejected
from qanat.gateway.normalize import normalize_path, remove_dot_segments

# RFC 3986 §5.4.1/§5.4.2 with base "http://a/b/c/d;p?q": the merged path each
# reference produces (§5.2.3), and the path after remove_dot_segments.
RFC_5_4 = [
    ("/b/c/g", "/b/c/g"),
    ("/b/c/./g", "/b/c/g"),
    ("/b/c/g/", "/b/c/g/"),
    ("/g", "/g"),
    ("/b/c/.", "/b/c/"),
    ("/b/c/./", "/b/c/"),
    ("/b/c/..", "/b/"),
    ("/b/c/../", "/b/"),
    ("/b/c/../g", "/b/g"),
    ("/b/c/../..", "/"),
    ("/b/c/../../", "/"),
    ("/b/c/../../g", "/g"),
    ("/b/c/../../../g", "/g"),
    ("/b/c/../../../../g", "/g"),
    ("/./g", "/g"),
    ("/../g", "/g"),
    ("/b/c/g.", "/b/c/g."),
    ("/b/c/.g", "/b/c/.g"),
    ("/b/c/g..", "/b/c/g.."),
    ("/b/c/..g", "/b/c/..g"),
    ("/b/c/./../g", "/b/g"),
    ("/b/c/./g/.", "/b/c/g/"),
    ("/b/c/g/./h", "/b/c/g/h"),
    ("/b/c/g/../h", "/b/c/h"),
    ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
    ("/b/c/g;x=1/../y", "/b/c/y"),
    ("/a/b/c/./../../g", "/a/g"),  # the §5.2.4 worked example
]


@pytest.mark.parametrize(("merged", "expected"), RFC_5_4)
def test_rfc3986_section_5_4_examples(merged: str, expected: str) -> None:
    """remove_dot_segments reproduces every RFC 3986 §5.4 example (as merged paths)."""
    assert remove_dot_segments(merged.encode()) == expected.encode()
    assert normalize_path(merged.encode()) == expected.encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/api/../admin", "/admin"),
        ("/api/%2e%2e/admin", "/admin"),
        ("/api/%2E%2E/admin", "/admin"),
        ("/api/.%2e/admin", "/admin"),
        ("/api/%2e/users", "/api/users"),
        ("//api///users//", "/api/users/"),
        ("/%41%62%7e%5F", "/Ab~_"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ('/a"b', "/a%22b"),
        ("/a|b{c}", "/a%7Cb%7Bc%7D"),
        ("/.well-known/x", "/.well-known/x"),
        ("/a/..b/c", "/a/..b/c"),
    ],
)
def test_decodes_unreserved_then_removes_dot_segments(raw: str, expected: str) -> None:
    """Unreserved escapes are decoded before dot removal, so encoded '..' cannot hide."""
    assert normalize_path(raw.encode()) == expected.encode()


@pytest.mark.parametrize(
    "raw",
    [
        "/api/%2E%2E%2Fadmin",
        "/api/..%2fadmin",
        "/api%2fadmin",
        "/api/%5c..%5cadmin",
        "/api\\..\\admin",
        "/api/%00",
        "/api/%zz",
        "/api/%4",
        "/api/%",
        "/api/%+1",
        "api/x",
        "",
    ],
)
def test_rejects_encoded_separators_and_bad_escapes(raw: str) -> None:
    """Encoded slash/backslash/NUL, raw backslash, malformed escapes and relative paths get 400."""
    with pytest.raises(RequestRejected) as info:
        normalize_path(raw.encode())
    assert info.value.status == 400


def test_normal_path_is_returned_without_copying() -> None:
    """The common case (already normal) returns the very same bytes object."""
    path = b"/api/users/42;v=1"
    assert normalize_path(path) is path


_SEGMENT = st.text(
    alphabet=st.sampled_from("abcXYZ019-._~%2eEfF/\\:@!$&'()*+,;="), min_size=0, max_size=8
)


def _reference(path: bytes) -> bytes | None:
    """A slow, obvious model: decode, refuse separators, resolve a segment stack."""
    out = bytearray()
    i = 0
    hexd = b"0123456789abcdefABCDEF"
    while i < len(path):
        c = path[i]
        if c == 0x25:
            pair = path[i + 1 : i + 3]
            if len(pair) < 2 or any(ch not in hexd for ch in pair):
                return None
            b = int(pair, 16)
            if b in (0x2F, 0x5C, 0):
                return None
            unreserved = (chr(b).isalnum() and b < 128) or chr(b) in "-._~"
            out += bytes([b]) if unreserved else b"%" + pair.upper()
            i += 3
        elif c == 0x5C:
            return None
        else:
            out.append(c)
            i += 1
    segs = bytes(out).split(b"/")[1:]
    stack: list[bytes] = []
    for s in segs:
        if s == b"..":
            if stack:
                stack.pop()
        elif s not in (b".", b""):
            stack.append(s)
    trailing = bool(segs) and segs[-1] in (b"", b".", b"..")
    result = b"/" + b"/".join(stack)
    return result + b"/" if trailing and stack else result


@given(st.lists(_SEGMENT, max_size=8))
def test_matches_a_segment_stack_model(segments: list[str]) -> None:
    """For any path, the result equals a naive decode-and-resolve model, or both refuse."""
    path = ("/" + "/".join(segments)).encode()
    expected = _reference(path)
    if expected is None:
        with pytest.raises(RequestRejected):
            normalize_path(path)
    else:
        assert normalize_path(path) == expected


@given(st.lists(_SEGMENT, max_size=8))
def test_output_is_normal_and_idempotent(segments: list[str]) -> None:
    """Results start with '/', hold no '//' or dot segment, and normalise to themselves."""
    path = ("/" + "/".join(segments)).encode()
    try:
        out = normalize_path(path)
    except RequestRejected:
        return
    assert out.startswith(b"/")
    assert b"//" not in out
    assert all(seg not in (b".", b"..") for seg in out.split(b"/"))
    assert normalize_path(out) == out


@given(st.lists(st.sampled_from(["..", "%2e%2e", ".%2E", "x", "."]), max_size=6))
def test_traversal_never_escapes_below_a_prefix_it_did_not_name(steps: list[str]) -> None:
    """'/api/<steps>/admin' lands under /api only if the steps leave it there."""
    path = ("/api/" + "/".join(steps) + "/admin").encode()
    stack = ["api"]
    for step in steps:
        if step in ("..", "%2e%2e", ".%2E"):
            if stack:
                stack.pop()
        elif step == "x":
            stack.append("x")
    out = normalize_path(path)
    assert out.startswith(b"/api/") == (stack[:1] == ["api"])
