"""qanat.gateway: the API gateway (hardened HTTP/1.1 server, routing, proxy).

See ``docs/gateway.md``. ``python -m qanat.gateway --config FILE.yaml`` runs one.
"""

from qanat.gateway.admin import AdminServer as AdminServer
from qanat.gateway.app import Gateway as Gateway
from qanat.gateway.config import HashOn as HashOn
from qanat.gateway.config import RouteConfig as RouteConfig
from qanat.gateway.config import load_gateway_file as load_gateway_file
from qanat.gateway.config import parse_routes as parse_routes
from qanat.gateway.discovery import DiscoveryResolver as DiscoveryResolver
from qanat.gateway.filters import Exchange as Exchange
from qanat.gateway.filters import Filter as Filter
from qanat.gateway.filters import Reply as Reply
from qanat.gateway.filters import register_filter as register_filter
from qanat.gateway.hardening import Limits as Limits
from qanat.gateway.hardening import RequestRejected as RequestRejected
from qanat.gateway.instance_health import InstanceState as InstanceState
from qanat.gateway.metrics import GatewayMetrics as GatewayMetrics
from qanat.gateway.normalize import normalize_path as normalize_path
from qanat.gateway.reload import ROUTES_KEY as ROUTES_KEY
from qanat.gateway.reload import RouteReloader as RouteReloader
from qanat.gateway.route_runtime import RouteState as RouteState
from qanat.gateway.topology import GatewayPlan as GatewayPlan
from qanat.gateway.topology import plan_from_file as plan_from_file
from qanat.gateway.topology import plan_from_topology as plan_from_topology
from qanat.gateway.upstream import Resolver as Resolver
from qanat.gateway.upstream import StaticResolver as StaticResolver

__all__ = [
    "ROUTES_KEY",
    "AdminServer",
    "DiscoveryResolver",
    "Exchange",
    "Filter",
    "Gateway",
    "GatewayMetrics",
    "GatewayPlan",
    "HashOn",
    "InstanceState",
    "Limits",
    "Reply",
    "RequestRejected",
    "Resolver",
    "RouteConfig",
    "RouteReloader",
    "RouteState",
    "StaticResolver",
    "load_gateway_file",
    "normalize_path",
    "parse_routes",
    "plan_from_file",
    "plan_from_topology",
    "register_filter",
]
