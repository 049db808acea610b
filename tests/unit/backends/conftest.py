"""Make ``tests.contract`` importable (until pytest's ``pythonpath`` includes the repo root)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
