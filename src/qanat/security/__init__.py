"""qanat.security: who is calling — JWT and API-key authentication, and identity headers.

Pure pieces (``JwtVerifier``, ``ApiKeyAuth``, ``challenge``,
``identity_headers``) decide; ``JwtAuthenticator`` and ``JwksCache`` do the
little I/O there is (fetching a JWKS). See ``docs/security.md``.
"""

from qanat.security.apikey import ApiKeyAuth as ApiKeyAuth
from qanat.security.apikey import ApiKeySettings as ApiKeySettings
from qanat.security.apikey import hash_api_key as hash_api_key
from qanat.security.bearer import JwtAuthenticator as JwtAuthenticator
from qanat.security.failure import AuthFailure as AuthFailure
from qanat.security.failure import challenge as challenge
from qanat.security.failure import www_authenticate as www_authenticate
from qanat.security.identity import IDENTITY_HEADER_PREFIXES as IDENTITY_HEADER_PREFIXES
from qanat.security.identity import Identity as Identity
from qanat.security.identity import identity_headers as identity_headers
from qanat.security.identity import strip_identity_headers as strip_identity_headers
from qanat.security.jwks import JwksCache as JwksCache
from qanat.security.jwks import JwksStats as JwksStats
from qanat.security.jwt import JwksSettings as JwksSettings
from qanat.security.jwt import JwtSettings as JwtSettings
from qanat.security.jwt import JwtVerifier as JwtVerifier
from qanat.security.jwt import extract_token as extract_token
from qanat.security.jwt_cache import TokenCacheStats as TokenCacheStats
from qanat.security.jwt_config import jwt_settings_from_config as jwt_settings_from_config
from qanat.security.keys import KeySet as KeySet
from qanat.security.keys import VerificationKey as VerificationKey

__all__ = [
    "IDENTITY_HEADER_PREFIXES",
    "ApiKeyAuth",
    "ApiKeySettings",
    "AuthFailure",
    "Identity",
    "JwksCache",
    "JwksSettings",
    "JwksStats",
    "JwtAuthenticator",
    "JwtSettings",
    "JwtVerifier",
    "KeySet",
    "TokenCacheStats",
    "VerificationKey",
    "challenge",
    "extract_token",
    "hash_api_key",
    "identity_headers",
    "jwt_settings_from_config",
    "strip_identity_headers",
    "www_authenticate",
]
