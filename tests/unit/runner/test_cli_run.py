"""The runner's commands as a person meets them when something is wrong (no processes started)."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from qanat.cli import app

runner = CliRunner()
GOOD = """name: t
services:
  a: {app: a.app:app}
gateway:
  routes:
    - name: a
      match: {prefix: /a}
      upstream: {kind: service, service: a}
"""


def test_a_bad_topology_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    """An invalid qanat.yaml stops 'qanat up' with exit status 2 and file:line of the problem."""
    (tmp_path / "qanat.yaml").write_text("name: t\nservices:\n  a: {app: 'not an app path'}\n")
    result = runner.invoke(app, ["up", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'qanat.yaml'}:3" in result.output
    assert "package.module:attribute" in result.output
    assert not (tmp_path / ".qanat").exists()  # nothing was started


def test_a_taken_gateway_port_exits_1_before_starting(tmp_path: Path) -> None:
    """'qanat up --port P' with P taken says so, suggests --port, and starts nothing."""
    (tmp_path / "qanat.yaml").write_text(GOOD)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(app, ["up", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 1
    assert "already in use" in result.output and "--port" in result.output
    assert not (tmp_path / ".qanat" / "logs").exists()


def test_commands_without_a_running_up_say_how_to_start_one(tmp_path: Path) -> None:
    """status, scale and down with no supervisor: exit 1 and a hint to run 'qanat up'."""
    (tmp_path / "qanat.yaml").write_text(GOOD)
    for args in (["status"], ["scale", "a", "2"], ["down"]):
        result = runner.invoke(app, [*args, "-d", str(tmp_path)])
        assert result.exit_code == 1, args
        assert "no running 'qanat up'" in result.output


def test_state_dir_option_moves_the_control_socket(tmp_path: Path) -> None:
    """--state-dir is where commands look for the supervisor (the error names that place)."""
    (tmp_path / "qanat.yaml").write_text(GOOD)
    other = tmp_path / "other-state"
    result = runner.invoke(app, ["status", "-d", str(tmp_path), "--state-dir", str(other)])
    assert result.exit_code == 1
    assert str(other) in result.output


def test_logs_prints_each_instance_with_its_name(tmp_path: Path) -> None:
    """'qanat logs a' shows a-0 and a-1 (not a-b-0 of a service named a-b), last lines only."""
    (tmp_path / "qanat.yaml").write_text(GOOD)
    logs = tmp_path / ".qanat" / "logs"
    logs.mkdir(parents=True)
    (logs / "a-0.log").write_text("old\nzero\n")
    (logs / "a-1.log").write_text("one\n")
    (logs / "a-b-0.log").write_text("other service\n")
    result = runner.invoke(app, ["logs", "a", "-n", "1", "-d", str(tmp_path)])
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    assert lines == ["a-0 | zero", "a-1 | one"]


def test_logs_of_an_unknown_service_lists_the_known_ones(tmp_path: Path) -> None:
    """Asking for logs nobody wrote: exit 1 and the services that have logs."""
    (tmp_path / "qanat.yaml").write_text(GOOD)
    logs = tmp_path / ".qanat" / "logs"
    logs.mkdir(parents=True)
    (logs / "a-0.log").write_text("x\n")
    (logs / "gateway.log").write_text("x\n")
    result = runner.invoke(app, ["logs", "nope", "-d", str(tmp_path)])
    assert result.exit_code == 1
    assert "services with logs: a, gateway" in result.output
