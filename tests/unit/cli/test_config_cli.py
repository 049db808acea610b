"""``qanat config``: each command against a real SQLite file, through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qanat.cli import app

runner = CliRunner()


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh control database, chosen through $QANAT_BACKEND as a user would."""
    url = f"sqlite:///{tmp_path}/state/control.db"
    monkeypatch.setenv("QANAT_BACKEND", url)
    return url


def qanat(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return exit code, stdout and stderr."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_set_then_get_prints_the_exact_value(backend: str) -> None:
    """set creates the file and prints the revision; get prints the value verbatim."""
    code, out, _ = qanat("config", "set", "orders/greeting", "hello,  world")
    assert code == 0 and "revision 1" in out
    assert qanat("config", "get", "orders/greeting") == (0, "hello,  world\n", "")


def test_get_json_carries_the_revision(backend: str) -> None:
    """get --json prints key, value and revision as one JSON document."""
    qanat("config", "set", "a", "1")
    qanat("config", "set", "a", "2")
    code, out, _ = qanat("config", "get", "a", "--json")
    assert code == 0 and json.loads(out) == {"key": "a", "value": "2", "revision": 2}


def test_missing_key_is_one_line_and_exit_1(backend: str) -> None:
    """get of a missing key prints one error line (no traceback) and exits 1."""
    qanat("config", "set", "present", "x")
    code, out, err = qanat("config", "get", "absent")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "absent" in err and "Traceback" not in err


def test_read_commands_do_not_create_a_database(tmp_path: Path, backend: str) -> None:
    """A read command on a missing SQLite file says so instead of creating it."""
    for command in (["config", "get", "k"], ["config", "ls"], ["registry", "ls"]):
        code, _, err = qanat(*command)
        assert code == 1 and "no control database" in err, command
    assert not (tmp_path / "state").exists()


def test_unreachable_backend_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A backend that cannot be opened gives one error line naming the URL, and exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/control.db"
    code, _, err = qanat("config", "set", "k", "v", "--backend", url)
    assert code == 1 and url in err and err.count("\n") == 1


def test_unknown_scheme_lists_allowed_schemes(tmp_path: Path) -> None:
    """An unknown backend scheme is refused with the list of allowed schemes."""
    code, _, err = qanat("config", "get", "k", "--backend", "zookeeper://localhost")
    assert code == 1 and "sqlite://" in err and "etcd://" in err and "memory://" in err


def test_expected_revision_guards_the_write(backend: str) -> None:
    """set --expected-revision writes only when the key is at that revision (0: absent)."""
    assert qanat("config", "set", "lock", "me", "--expected-revision", "0")[0] == 0
    code, _, err = qanat("config", "set", "lock", "you", "--expected-revision", "0")
    assert code == 1 and "revision 1" in err
    assert qanat("config", "set", "lock", "me2", "--expected-revision", "1")[0] == 0
    assert qanat("config", "get", "lock")[1] == "me2\n"


def test_ls_lists_keys_under_prefix(backend: str) -> None:
    """ls PREFIX lists only keys under the prefix; --json gives entries in key order."""
    for key in ("svc/b", "svc/a", "other"):
        qanat("config", "set", key, key.upper())
    code, out, _ = qanat("config", "ls", "svc/", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"key": "svc/a", "value": "SVC/A", "revision": 2},
        {"key": "svc/b", "value": "SVC/B", "revision": 1},
    ]
    code, out, _ = qanat("config", "ls", "svc/")
    assert code == 0 and "svc/a" in out and "svc/b" in out and "other" not in out


def test_history_newest_first(backend: str) -> None:
    """history prints a key's changes newest first, with old and new values."""
    qanat("config", "set", "k", "one")
    qanat("config", "set", "k", "two")
    qanat("config", "delete", "k")
    code, out, _ = qanat("config", "history", "k", "--json")
    assert code == 0
    assert [(c["type"], c["old_value"], c["new_value"]) for c in json.loads(out)] == [
        ("deleted", "two", None),
        ("modified", "one", "two"),
        ("added", None, "one"),
    ]
    assert qanat("config", "history", "k", "-n", "1", "--json")[1].count('"revision"') == 1


def test_delete_missing_key_exits_1(backend: str) -> None:
    """delete of a key that does not exist is an error; of one that does, it succeeds."""
    qanat("config", "set", "k", "v")
    assert qanat("config", "delete", "k")[0] == 0
    code, _, err = qanat("config", "delete", "k")
    assert code == 1 and "'k'" in err


def test_help_explains_commands_and_backend() -> None:
    """--help names every config command and the backend option with its variable."""
    code, out, _ = qanat("config", "--help")
    assert code == 0
    for command in ("get", "set", "delete", "ls", "watch", "history"):
        assert command in out
    code, out, _ = qanat("config", "watch", "--help")
    assert code == 0 and "--prefix" in out and "QANAT_BACKEND" in out
