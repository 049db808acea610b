"""The suite-wide rules of tests/conftest.py, run on a tiny suite of their own (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SKIPS = """
import pytest

def test_needs_a_server() -> None:
    pytest.skip("the server did not answer")
"""


def suite(pytester: pytest.Pytester, folder: str, source: str) -> None:
    """A copy of the real tests/conftest.py, and one test module under tests/``folder``."""
    tests = pytester.mkdir("tests")
    (tests / "conftest.py").write_text(CONFTEST.read_text())
    (tests / folder).mkdir()
    (tests / folder / "test_one.py").write_text(source)


@pytest.mark.parametrize("folder", ["integration", "e2e"])
def test_under_ci_a_skip_of_a_server_test_is_a_failure_naming_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    """With CI set, a skipped integration or e2e test fails, and the failure carries the reason."""
    suite(pytester, folder, SKIPS)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*CI is set, so this {folder} test may not skip*"
                                 "*the server did not answer*"])


@pytest.mark.parametrize("ci", ["", "false"])
def test_without_ci_a_server_test_may_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    """With CI empty (or unset) or false, the same test is simply skipped."""
    suite(pytester, "integration", SKIPS)
    monkeypatch.setenv("CI", ci)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=1)


def test_under_ci_a_unit_test_may_still_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule is for server tests only: a skip under tests/unit stays a skip."""
    suite(pytester, "unit", SKIPS)
    monkeypatch.setenv("CI", "1")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=1)


def test_under_ci_a_module_level_skip_is_a_collection_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that skips itself at import (importorskip) errors under CI instead."""
    suite(pytester, "integration", 'import pytest\npytest.importorskip("no_such_module_x")\n')
    monkeypatch.setenv("CI", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*may not skip*no_such_module_x*"])


def test_tests_are_marked_by_their_folder(pytester: pytest.Pytester) -> None:
    """Tests under tests/integration get the integration marker, so -m selects them."""
    suite(pytester, "integration", "def test_a() -> None:\n    pass\n")
    (pytester.path / "tests" / "unit").mkdir()
    (pytester.path / "tests" / "unit" / "test_b.py").write_text("def test_b() -> None:\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "integration")
    result.assert_outcomes(passed=1, deselected=1)
