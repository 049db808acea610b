"""qanat.http: the pooled HTTP/1.1 upstream client shared by the gateway and the service client.

Built on asyncio Protocols and ``httptools`` (llhttp); runs on uvloop or the
default loop. See ``docs/http-client.md``.
"""

from qanat.http.errors import IDEMPOTENT_METHODS as IDEMPOTENT_METHODS
from qanat.http.errors import BodyTooLarge as BodyTooLarge
from qanat.http.errors import ConnectError as ConnectError
from qanat.http.errors import InvalidRequest as InvalidRequest
from qanat.http.errors import PoolOverloaded as PoolOverloaded
from qanat.http.errors import UpstreamError as UpstreamError
from qanat.http.errors import UpstreamProtocolError as UpstreamProtocolError
from qanat.http.errors import UpstreamReset as UpstreamReset
from qanat.http.errors import UpstreamTimeout as UpstreamTimeout
from qanat.http.errors import retry_safe as retry_safe
from qanat.http.pool import HttpPool as HttpPool
from qanat.http.response import UpstreamResponse as UpstreamResponse
from qanat.http.sending import Body as Body
from qanat.http.stats import HostStats as HostStats
from qanat.http.stats import PoolStats as PoolStats

__all__ = [
    "IDEMPOTENT_METHODS",
    "Body",
    "BodyTooLarge",
    "ConnectError",
    "HostStats",
    "HttpPool",
    "InvalidRequest",
    "PoolOverloaded",
    "PoolStats",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamReset",
    "UpstreamResponse",
    "UpstreamTimeout",
    "retry_safe",
]
