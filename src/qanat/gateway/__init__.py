"""qanat.gateway: the API gateway (hardened HTTP/1.1 server, routing, proxy).

See ``docs/gateway.md``. ``python -m qanat.gateway --config FILE.yaml`` runs one.
"""

from qanat.gateway.app import Gateway as Gateway
from qanat.gateway.config import RouteConfig as RouteConfig
from qanat.gateway.config import load_gateway_file as load_gateway_file
from qanat.gateway.config import parse_routes as parse_routes
from qanat.gateway.filters import Exchange as Exchange
from qanat.gateway.filters import Filter as Filter
from qanat.gateway.filters import Reply as Reply
from qanat.gateway.filters import register_filter as register_filter
from qanat.gateway.hardening import Limits as Limits
from qanat.gateway.hardening import RequestRejected as RequestRejected
from qanat.gateway.normalize import normalize_path as normalize_path
from qanat.gateway.upstream import Resolver as Resolver
from qanat.gateway.upstream import StaticResolver as StaticResolver

__all__ = [
    "Exchange",
    "Filter",
    "Gateway",
    "Limits",
    "Reply",
    "RequestRejected",
    "Resolver",
    "RouteConfig",
    "StaticResolver",
    "load_gateway_file",
    "normalize_path",
    "parse_routes",
    "register_filter",
]
