"""Topology files that extend another: the merge rules, and errors located in the right file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qanat.cli import app
from qanat.errors import ConfigError
from qanat.topology import load_topology

BASE = """\
name: shop
services:
  users:
    app: users.app:app
    replicas: 2
    env: {LOG: info, MODE: fast}
  catalog:
    app: catalog.app:app
    depends_on: [users]
gateway:
  port: 9090
  routes:
    - name: users
      match: {prefix: /api/users}
      upstream: {kind: service, service: users}
"""

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def files(tmp_path: Path, **texts: str) -> Path:
    """Write ``name=text`` pairs as ``name.yaml`` files; the path of the last one."""
    path = tmp_path
    for name, text in texts.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
    return path


def overlay(tmp_path: Path, text: str, base: str = BASE) -> Path:
    """``qanat.yaml`` (the base) and ``over.yaml`` (``extends: qanat.yaml`` plus ``text``)."""
    (tmp_path / "qanat.yaml").write_text(base)
    return files(tmp_path, over="extends: qanat.yaml\n" + text)


# -- merge rules -------------------------------------------------------------


def test_mappings_merge_key_by_key(tmp_path: Path) -> None:
    """One field of one service changes; its other fields and the other services are inherited."""
    topo = load_topology(overlay(tmp_path, "services:\n  users:\n    database: sqlite:///u.db\n"))
    users = topo.services["users"]
    assert users.database == "sqlite:///u.db"
    assert (users.app, users.replicas) == ("users.app:app", 2)
    assert topo.services["catalog"].depends_on == ("users",)
    assert topo.name == "shop" and topo.gateway.port == 9090
    assert topo.gateway.routes[0]["name"] == "users"


def test_nested_mappings_merge_too(tmp_path: Path) -> None:
    """A key inside a mapping value (env) is added or changed without dropping its siblings."""
    text = "services:\n  users:\n    env: {MODE: safe, EXTRA: '1'}\n"
    env = load_topology(overlay(tmp_path, text)).services["users"].env
    assert env == {"LOG": "info", "MODE": "safe", "EXTRA": "1"}


def test_scalars_and_lists_replace(tmp_path: Path) -> None:
    """A number replaces; a list replaces the whole base list (no element-wise merge)."""
    text = (
        "services:\n  users: {replicas: 5}\n  catalog: {depends_on: []}\n"
        "gateway:\n  routes:\n"
        "    - {name: shop, match: {prefix: /api}, upstream: {kind: service, service: catalog}}\n"
    )
    topo = load_topology(overlay(tmp_path, text))
    assert topo.services["users"].replicas == 5
    assert topo.services["catalog"].depends_on == ()
    assert [r["name"] for r in topo.gateway.routes] == ["shop"]


def test_null_deletes_a_key_so_the_default_applies(tmp_path: Path) -> None:
    """``null`` removes the base's value: a field falls back to its default, a service goes."""
    text = "services:\n  users: {replicas: null}\n  catalog: null\ngateway: {port: null}\n"
    topo = load_topology(overlay(tmp_path, text))
    assert topo.services["users"].replicas == 1
    assert list(topo.services) == ["users"]
    assert topo.gateway.port == 8080


def test_new_keys_are_added_in_order_after_the_base(tmp_path: Path) -> None:
    """A service the base lacks is added after the base's; a null inside it is dropped."""
    text = "services:\n  orders: {app: orders.app:app, database: null}\n"
    topo = load_topology(overlay(tmp_path, text))
    assert list(topo.services) == ["users", "catalog", "orders"]
    assert topo.services["orders"].database is None


def test_an_empty_overlay_is_the_base(tmp_path: Path) -> None:
    """``extends`` alone gives exactly the base topology."""
    over = load_topology(overlay(tmp_path, ""))
    assert over.model_dump() == load_topology(tmp_path / "qanat.yaml").model_dump()


def test_a_chain_applies_the_nearest_file_last(tmp_path: Path) -> None:
    """a extends b extends c: b changes c, then a changes the result; each may set other keys."""
    (tmp_path / "c.yaml").write_text(BASE)
    files(tmp_path, b="extends: c.yaml\nservices:\n  users: {replicas: 3, version: v2}\n")
    top = files(tmp_path, a="extends: b.yaml\nservices:\n  users: {replicas: 4}\n")
    users = load_topology(top).services["users"]
    assert (users.replicas, users.version, users.app) == (4, "v2", "users.app:app")


def test_extends_is_relative_to_the_file_that_names_it(tmp_path: Path) -> None:
    """Each path resolves against its own file's directory; a directory means its qanat.yaml."""
    (tmp_path / "qanat.yaml").write_text(BASE)
    (tmp_path / "envs").mkdir()
    files(tmp_path / "envs", common="extends: ..\nservices:\n  users: {version: v2}\n")
    (tmp_path / "envs" / "prod").mkdir()
    top = files(tmp_path / "envs" / "prod", qanat="extends: ../common.yaml\ngateway: {port: 1}\n")
    topo = load_topology(tmp_path / "envs" / "prod")
    assert (topo.services["users"].version, topo.gateway.port) == ("v2", 1)
    assert topo.root == top.parent.resolve()  # the file run, not the base
    assert topo.path == top.resolve()


def test_the_shop_on_postgres_is_the_shop_with_other_databases() -> None:
    """qanat.postgres.yaml changes only each service's database; everything else is qanat.yaml's."""
    sqlite = load_topology(SHOP)
    postgres = load_topology(SHOP / "qanat.postgres.yaml")
    assert {name: postgres.database_url(name) for name in postgres.services} == {
        "users": "postgresql+asyncpg://postgres@127.0.0.1:5432/shop_users",
        "catalog": "postgresql+asyncpg://postgres@127.0.0.1:5432/shop_catalog",
    }
    without_databases = {
        name: spec.model_copy(update={"database": None})
        for name, spec in postgres.services.items()
    }
    assert postgres.model_copy(update={"services": without_databases}) == sqlite.model_copy(
        update={"path": postgres.path}
    )
    assert postgres.root == sqlite.root


# -- errors --------------------------------------------------------------------


def test_a_bad_value_in_the_base_points_into_the_base(tmp_path: Path) -> None:
    """A value the overlay inherits is reported at the base file's line."""
    path = overlay(tmp_path, "services:\n  users: {version: v2}\n",
                   base=BASE.replace("replicas: 2", "replicas: lots"))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    text = str(info.value)
    assert f"{tmp_path / 'qanat.yaml'}:5: services.users.replicas" in text
    assert f"in {path} (extending {tmp_path / 'qanat.yaml'})" in text


def test_a_bad_value_in_the_overlay_points_into_the_overlay(tmp_path: Path) -> None:
    """A value the overlay sets, or a misspelt key in it, is reported at the overlay's line."""
    path = overlay(tmp_path, "services:\n  users:\n    replicas: -1\n    databse: x\n")
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    text = str(info.value)
    assert f"{path}:4: services.users.replicas" in text
    assert f"{path}:5: services.users.databse: unknown field" in text


def test_a_route_error_points_at_the_file_of_the_route(tmp_path: Path) -> None:
    """The route checks after validation use the merged locations too."""
    path = overlay(tmp_path, "services:\n  users: null\n  catalog: {depends_on: []}\n")
    with pytest.raises(ConfigError) as info:  # the base's route now names a deleted service
        load_topology(path)
    assert str(info.value).startswith(f"{tmp_path / 'qanat.yaml'}:15: route 'users'")


def test_a_missing_base_is_named_at_the_extends_line(tmp_path: Path) -> None:
    """``extends`` naming no file: the error is at that line and says what it looked for."""
    path = files(tmp_path, over="name: shop\nextends: qanat.yml\n")
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value).startswith(f"{path}:2: extends: {tmp_path / 'qanat.yml'} not found")
    assert "relative to the directory of over.yaml" in str(info.value)


@pytest.mark.parametrize("value", ["", "[a.yaml]", "null", "3"])
def test_extends_must_be_a_path(tmp_path: Path, value: str) -> None:
    """A list, a number, null or an empty string is not a path: located error with an example."""
    path = files(tmp_path, over=f"name: shop\nextends: {value}\n")
    with pytest.raises(ConfigError, match=r"over.yaml:2: extends: expected the path .*qanat.yaml"):
        load_topology(path)


def test_a_file_extending_itself_is_a_cycle(tmp_path: Path) -> None:
    """``extends`` of the file itself is refused, not followed for ever."""
    path = files(tmp_path, over="extends: over.yaml\n")
    with pytest.raises(ConfigError, match=r"over.yaml:1: extends: a cycle \(.*over.yaml -> "):
        load_topology(path)


def test_a_cycle_through_several_files_names_them_in_order(tmp_path: Path) -> None:
    """a -> b -> c -> b: the error is at c's extends line and lists b, c, b."""
    files(tmp_path, b="extends: c.yaml\n", c="name: x\n\nextends: ./b.yaml\n")
    top = files(tmp_path, a="extends: b.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_topology(top)
    b, c = tmp_path / "b.yaml", tmp_path / "c.yaml"
    assert str(info.value).startswith(f"{c}:3: extends: a cycle ({b} -> {c} -> {b})")


def test_a_base_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    """Every file of the chain must be a mapping; the error names the one that is not."""
    path = overlay(tmp_path, "", base="- name: shop\n")
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value).startswith(f"{tmp_path / 'qanat.yaml'}: the topology must be a mapping")


def test_broken_yaml_in_the_base_names_the_base(tmp_path: Path) -> None:
    """A syntax error in the base is located in the base, even when loading the overlay."""
    path = overlay(tmp_path, "", base="name: shop\nservices: [unclosed\n")
    with pytest.raises(ConfigError, match=r"/qanat.yaml:\d+: invalid YAML"):
        load_topology(path)


def test_qanat_up_takes_an_overlay_and_reports_a_base_error(tmp_path: Path) -> None:
    """'qanat up FILE' loads the chain; a bad inherited value exits 2 at the base's line."""
    path = overlay(tmp_path, "services:\n  users: {version: v2}\n",
                   base=BASE.replace("users.app:app", "users/app.py"))
    result = CliRunner().invoke(app, ["up", str(path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'qanat.yaml'}:4: services.users.app" in result.output
    assert not (tmp_path / ".qanat").exists()  # nothing was started
