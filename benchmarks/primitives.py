"""Primitives against the libraries a Python user would otherwise pick, in one run.

Run: ``.venv/bin/python benchmarks/primitives.py`` (add ``--quick`` for a smoke run).
Each family lives in ``benchmarks/prim_<family>.py`` and exports ``cases()``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import Case, markdown_table, measure


def all_cases() -> list[Case]:
    here = Path(__file__).parent
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("prim_"):
            cases.extend(importlib.import_module(info.name).cases())
    return cases


def main() -> None:
    quick = "--quick" in sys.argv
    results = []
    for case in all_cases():
        if quick:
            case = Case(**{**case.__dict__, "number": max(10, case.number // 100)})
        result = measure(case, repeat=2 if quick else 7)
        speed = f"{result.speedup:.1f}x" if result.speedup is not None else ""
        print(f"{case.family:>12} | {case.name:<48} {result.ours_ns / 1000:8.2f} us {speed}",
              file=sys.stderr)
        results.append(result)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
