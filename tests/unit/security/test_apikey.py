"""API keys: hashed storage, header then query, APISIX answers, credentials hidden upstream."""

from __future__ import annotations

from typing import Any

import pytest

from qanat.errors import ConfigError
from qanat.security import (
    ApiKeyAuth,
    ApiKeySettings,
    AuthFailure,
    Identity,
    challenge,
    hash_api_key,
)

ALICE, BOB = "k-alice-7f3a9", "k-bob-19cc2"


def auth(**config: Any) -> ApiKeyAuth:
    base: dict[str, Any] = {
        "consumers": [
            {"name": "alice", "key_sha256": hash_api_key(ALICE)},
            {"name": "bob", "key_sha256": hash_api_key(BOB).upper()},
        ]
    }
    base.update(config)
    return ApiKeyAuth(ApiKeySettings.from_config(base))


def test_key_in_header_maps_to_its_consumer() -> None:
    """The ``apikey`` header's key authenticates as the consumer it is configured for."""
    result = auth().authenticate([(b"apikey", BOB.encode())], b"")
    assert result == Identity(subject="bob", method="apikey", consumer="bob")


def test_key_in_query_when_no_header() -> None:
    """Without the header, the ``apikey`` query parameter (URL-decoded) is used."""
    result = auth().authenticate([], b"x=1&apikey=" + ALICE.replace("-", "%2D").encode())
    assert isinstance(result, Identity) and result.consumer == "alice"


def test_missing_and_invalid_keys_answer_like_apisix() -> None:
    """No key is 401 ``Missing API key``; an unknown key is 401 ``Invalid API key``."""
    missing = auth().authenticate([], b"")
    invalid = auth().authenticate([(b"apikey", b"k-alice-7f3a8")], b"")
    assert isinstance(missing, AuthFailure) and missing.description == "Missing API key"
    assert isinstance(invalid, AuthFailure) and invalid.description == "Invalid API key"
    status, headers, body = challenge(invalid)
    assert status == 401 and b'"detail":"Invalid API key"' in body
    assert dict(headers)[b"www-authenticate"].startswith(b'Key realm="qanat"')


def test_config_holds_only_digests() -> None:
    """Plain keys, malformed digests and one key for two consumers are configuration errors."""
    with pytest.raises(ConfigError, match="64 hex digits"):
        ApiKeySettings.from_config({"consumers": [{"name": "a", "key_sha256": ALICE}]})
    with pytest.raises(ConfigError, match="each consumer"):
        ApiKeySettings.from_config({"consumers": [{"name": "a", "key": ALICE}]})
    twice = [{"name": n, "key_sha256": hash_api_key(ALICE)} for n in ("a", "b")]
    with pytest.raises(ConfigError, match=r"consumers\[1\].*already given to 'a'"):
        ApiKeySettings.from_config({"consumers": twice})


def test_custom_locations() -> None:
    """``header`` and ``query`` rename where the key is read; null disables a location."""
    a = auth(header="X-Api-Key", query=None)
    assert isinstance(a.authenticate([(b"x-api-key", ALICE.encode())], b""), Identity)
    assert isinstance(a.authenticate([], b"apikey=" + ALICE.encode()), AuthFailure)


def test_strip_removes_header_and_query_parameter() -> None:
    """The credential never reaches the upstream; other headers and parameters are kept."""
    headers = [(b"apikey", ALICE.encode()), (b"accept", b"*/*")]
    out, query = auth().strip(headers, b"a=1&apikey=" + ALICE.encode() + b"&b=2")
    assert out == [(b"accept", b"*/*")] and query == b"a=1&b=2"
    assert headers[0][0] == b"apikey"  # the input is not modified
