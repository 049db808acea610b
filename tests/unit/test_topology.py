"""The topology file: validation with file and line in every error."""

from pathlib import Path

import pytest

from qanat.core.duration import format_duration, parse_duration
from qanat.errors import ConfigError
from qanat.topology import load_topology

GOOD = """\
name: shop
services:
  users:
    app: users.app:app
    replicas: 2
    health:
      interval: 250ms
  catalog:
    app: catalog.app:app
    depends_on: [users]
gateway:
  port: 9090
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qanat.yaml"
    path.write_text(text)
    return path


def test_loads_a_valid_file_from_its_directory(tmp_path: Path) -> None:
    """A directory resolves to its qanat.yaml; durations and defaults are applied."""
    write(tmp_path, GOOD)
    topo = load_topology(tmp_path)
    assert topo.name == "shop"
    assert topo.services["users"].replicas == 2
    assert topo.services["users"].health.interval == pytest.approx(0.25)
    assert topo.services["catalog"].replicas == 1
    assert topo.gateway.port == 9090
    assert topo.root == tmp_path.resolve()
    assert topo.backend_url("registry") == f"sqlite:///{tmp_path.resolve()}/.qanat/control.db"
    assert topo.backend_url("config") == topo.backend_url("registry")
    assert topo.database_url("users").endswith("/.qanat/users.db")


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    """A wrong value is reported with file:line, the field path and the bad input."""
    path = write(tmp_path, GOOD.replace("replicas: 2", "replicas: lots"))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    text = str(info.value)
    assert f"{path}:5" in text
    assert "services.users.replicas" in text
    assert "'lots'" in text


def test_unknown_field_is_rejected_with_its_line(tmp_path: Path) -> None:
    """A misspelt key is an error at its own line, not silently ignored."""
    path = write(tmp_path, GOOD.replace("    replicas: 2", "    replica: 2"))
    with pytest.raises(ConfigError, match=r"qanat.yaml:5: services.users.replica: unknown field"):
        load_topology(path)


def test_unknown_dependency_lists_known_services(tmp_path: Path) -> None:
    """depends_on must name a defined service; the error lists the known ones."""
    path = write(tmp_path, GOOD.replace("depends_on: [users]", "depends_on: [payments]"))
    with pytest.raises(ConfigError, match=r"'payments'.*services: catalog, users"):
        load_topology(path)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    """Broken YAML is a ConfigError with the line of the problem."""
    path = write(tmp_path, "name: shop\nservices:\n  users: [unclosed\n")
    with pytest.raises(ConfigError, match=r"qanat.yaml:\d+: invalid YAML"):
        load_topology(path)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    """A key given twice is rejected rather than the last one silently winning."""
    path = write(tmp_path, "name: shop\nname: other\n")
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_topology(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A missing topology file is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match="file not found"):
        load_topology(tmp_path / "nope.yaml")


def test_bad_app_path_says_what_is_allowed(tmp_path: Path) -> None:
    """The app must be an import path with an attribute."""
    path = write(tmp_path, GOOD.replace("users.app:app", "users/app.py"))
    with pytest.raises(ConfigError, match=r"package\.module:attribute"):
        load_topology(path)


def test_unknown_backend_scheme(tmp_path: Path) -> None:
    """A backend URL with an unknown scheme names the allowed ones."""
    path = write(tmp_path, GOOD + "backends:\n  registry: consul://x\n")
    with pytest.raises(ConfigError, match="allowed schemes"):
        load_topology(path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0), ("1.5", 1.5), (3, 3.0)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    """Durations accept Go/Dapr units and bare seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 parsecs", "", "-1s", "s", True, float("nan")])
def test_parse_duration_rejects(bad: object) -> None:
    """Anything that is not a non-negative duration is a ValueError naming the units."""
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


def test_format_duration_round_trips() -> None:
    """format_duration produces text that parses back to the same value."""
    for seconds in (0.25, 5.0, 90.0, 600.0):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


ROUTED = GOOD.replace(
    "gateway:\n  port: 9090\n",
    "gateway:\n  port: 9090\n  routes:\n"
    "    - name: users\n"
    "      match: {prefix: /api/users}\n"
    "      upstream: {kind: service, service: users}\n",
)


def test_gateway_routes_are_validated_on_load(tmp_path: Path) -> None:
    """A valid route set loads; the routes are kept for the gateway."""
    write(tmp_path, ROUTED)
    assert load_topology(tmp_path).gateway.routes[0]["name"] == "users"


def test_bad_route_is_reported_with_its_line(tmp_path: Path) -> None:
    """A route with an unknown upstream kind names the route and the file and line."""
    path = write(tmp_path, ROUTED.replace("kind: service", "kind: consul"))
    expected = r"(?s)route 'users'.*qanat.yaml:16: gateway.routes.0.upstream"
    with pytest.raises(ConfigError, match=expected):
        load_topology(path)


def test_route_to_unknown_service(tmp_path: Path) -> None:
    """A route naming a service that qanat.yaml does not define is rejected."""
    path = write(tmp_path, ROUTED.replace("service: users}", "service: payments}"))
    with pytest.raises(ConfigError, match=r"service 'payments'.*services: catalog, users"):
        load_topology(path)
