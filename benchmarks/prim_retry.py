"""Retry: our decorator against tenacity's, on the paths every call takes.

Run alone: ``.venv/bin/python benchmarks/prim_retry.py``; with the others:
``.venv/bin/python benchmarks/primitives.py``. Both sides use the same stop
rule (3 attempts), retry on the same error, and sleep with a no-op, so what is
measured is the wrapper's own cost.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import tenacity

sys.path.insert(0, str(Path(__file__).parent))

from harness import Case, markdown_table, measure
from qanat.core.retry import RetryPolicy
from qanat.runtime.retrying import retry

PEER = f"tenacity {version('tenacity')}"


def _noop_sleep(delay: float) -> None:
    """Sleep that does not: the wrappers' overhead is what is measured."""


def _ours(max_attempts: int = 3) -> object:
    return retry(RetryPolicy(max_attempts=max_attempts, base=0.0), sleep=_noop_sleep)


def _theirs() -> object:
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_none(),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        sleep=_noop_sleep,
        reraise=True,
    )


class FailTwice:
    """Fails with ConnectionRefusedError twice, then succeeds; repeats that cycle forever."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        if self.n % 3:
            raise ConnectionRefusedError
        return self.n


def cases() -> list[Case]:
    def succeed() -> int:
        return 1

    ours_ok = _ours()(succeed)  # type: ignore[operator]
    theirs_ok = _theirs()(succeed)  # type: ignore[operator]
    ours_flaky = _ours()(FailTwice())  # type: ignore[operator]
    theirs_flaky = _theirs()(FailTwice())  # type: ignore[operator]
    return [
        Case("retry", "decorated call, succeeds first time", ours_ok, PEER, theirs_ok),
        Case(
            "retry",
            "fails twice, succeeds third (zero sleep)",
            ours_flaky,
            PEER,
            theirs_flaky,
            number=5_000,
        ),
    ]


if __name__ == "__main__":
    print(markdown_table(measure(c) for c in cases()))
