#!/usr/bin/env bash
# The gateway and http tests on a mypyc-compiled copy of src/ (mypyc_build.sh), so
# that the source stays ready for a compiled build: the same suite must pass
# interpreted and compiled. Nothing compiled is shipped.
#   bash benchmarks/gateway/mypyc_tests.sh [PYTEST ARGS...]     (2-3 minutes of gcc)
# Without arguments it runs tests/unit/gateway, tests/unit/http and
# tests/integration/test_gateway_*.py (the integration ones need the local servers:
# bash scripts/servers.sh). MYPYC_DIR=DIR builds into DIR and keeps it; with
# MYPYC_REUSE=1 as well, an existing build in DIR is used as it is (it goes stale
# with every edit of a compiled module).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -n "${MYPYC_DIR:-}" ]]; then
    WORK=$MYPYC_DIR
else
    WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
if [[ "${MYPYC_REUSE:-}" == 1 && -d "$WORK/src" ]]; then
    echo "reusing the build in $WORK"
else
    bash benchmarks/gateway/mypyc_build.sh "$WORK"
fi
export PYTHONPATH="$WORK/src"
# The compiled module is what the tests import, not the tree's .py.
.venv/bin/python -c '
import sys
import qanat.gateway.headers as m
print("imported", m.__file__)
sys.exit(0 if m.__file__.endswith(".so") else 1)
' || { echo "mypyc_tests.sh: the compiled qanat.gateway.headers is not what gets imported" >&2; exit 1; }
if [[ $# -eq 0 ]]; then
    set -- tests/unit/gateway tests/unit/http tests/integration/test_gateway_*.py
fi
.venv/bin/pytest -q -p no:randomly "$@"
