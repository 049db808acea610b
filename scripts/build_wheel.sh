#!/usr/bin/env bash
# Builds qanat's wheel the way `pip install .` does (hatch_build.py compiles the gateway's
# hot path with mypyc) and unpacks it, so the compiled build can be tested and measured
# beside the editable tree:
#   bash scripts/build_wheel.sh DIR      (about a minute of gcc)
# leaves DIR/wheel/qanat-*.whl and DIR/site (PYTHONPATH=DIR/site imports the compiled
# package, ahead of the editable install). QANAT_COMPILE=require: a failed compile fails
# here instead of falling back to a pure wheel; the script also checks a .so is what gets
# imported, so nothing downstream can pass by testing pure Python.
set -euo pipefail
DIR=${1:?usage: build_wheel.sh DIR}
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf "$DIR/wheel" "$DIR/site"; mkdir -p "$DIR/wheel"
QANAT_COMPILE=require "$PY" -m pip wheel -q --no-deps -w "$DIR/wheel" . 2>&1 \
    | grep -v "is ignored: it is neither" >&2 || true
WHEEL=$(ls "$DIR"/wheel/qanat-*.whl 2>/dev/null | head -1)
[[ -n "$WHEEL" ]] || { echo "build_wheel.sh: no wheel was built" >&2; exit 1; }
"$PY" -m zipfile -e "$WHEEL" "$DIR/site"
PYTHONPATH="$DIR/site" "$PY" - <<'PYEOF'
import sys
import qanat.gateway.proxy as m
if not m.__file__.endswith(".so"):
    sys.exit(f"build_wheel.sh: {m.__file__} was imported, not the compiled module")
print("compiled:", m.__file__)
PYEOF
