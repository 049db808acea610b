"""Route templates: bounded labels for metrics and span names."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router

from qanat.observability.routes import UNMATCHED, RouteTemplates, find_template


async def endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse("")


def test_a_top_level_route_is_its_declared_path_without_convertors() -> None:
    """'/users/{id:int}' is labelled '/users/{id}'."""
    route = Route("/users/{id:int}", endpoint)
    assert RouteTemplates([route]).label(route) == "/users/{id}"


def test_nested_mounts_prefix_the_template() -> None:
    """A route two mounts deep gets both mount prefixes, parameters kept as templates."""
    leaf = Route("/orders/{order_id:int}", endpoint)
    routes = [
        Route("/health", endpoint),
        Mount("/api", routes=[Mount("/{tenant}", routes=[leaf])]),
    ]
    assert find_template(routes, leaf) == "/api/{tenant}/orders/{order_id}"


def test_a_mounted_router_app_is_searched_too() -> None:
    """A Mount of a Router (app=...) exposes its routes, which are searched."""
    leaf = Route("/items/{sku}", endpoint)
    routes = [Mount("/shop", app=Router(routes=[leaf]))]
    assert RouteTemplates(routes).label(leaf) == "/shop/items/{sku}"


def test_no_route_is_the_unmatched_label() -> None:
    """A request that matched nothing gets the one fixed label."""
    assert RouteTemplates([]).label(None) == UNMATCHED


def test_a_route_outside_the_tree_falls_back_to_its_own_path() -> None:
    """A route not found in the tree (a foreign sub-app) is labelled with its own path."""
    stray = Route("/x/{y}", endpoint)
    assert RouteTemplates([Route("/a", endpoint)]).label(stray) == "/x/{y}"


def test_labels_are_cached_per_route_object() -> None:
    """The tree is searched once per route; later routes added to the list are found too."""
    routes: list[Route] = [Route("/a", endpoint)]
    templates = RouteTemplates(routes)
    first = routes[0]
    assert templates.label(first) == "/a"
    routes.clear()  # a cached label no longer needs the tree
    assert templates.label(first) == "/a"
    late = Route("/b/{n}", endpoint)
    routes.append(late)
    assert templates.label(late) == "/b/{n}"
