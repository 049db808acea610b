#!/usr/bin/env bash
# The gateway and http tests on the compiled build (the wheel `pip install .` makes,
# scripts/build_wheel.sh): the same suite must pass interpreted (make test) and compiled.
#   bash benchmarks/gateway/mypyc_tests.sh [PYTEST ARGS...]     (about a minute of gcc)
# Without arguments it runs tests/unit/gateway, tests/unit/http, tests/unit/security (jwt),
# tests/unit/core (rate limits, balancers), the service client's tests (round robin), the
# front door, and
# tests/integration/test_gateway_*.py and test_redis_ratelimit.py (the integration ones
# need the local servers: bash scripts/servers.sh). MYPYC_DIR=DIR builds into DIR and
# keeps it; with MYPYC_REUSE=1 as well, an existing build in DIR is used as it is (it
# goes stale with every edit of a compiled module).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -n "${MYPYC_DIR:-}" ]]; then
    WORK=$MYPYC_DIR
else
    WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
if [[ "${MYPYC_REUSE:-}" == 1 && -d "$WORK/site" ]]; then
    echo "reusing the build in $WORK"
else
    bash scripts/build_wheel.sh "$WORK"
fi
export PYTHONPATH="$WORK/site"
if [[ $# -eq 0 ]]; then
    set -- tests/unit/gateway tests/unit/http tests/unit/core tests/unit/security \
        tests/unit/runtime/test_client*.py \
        tests/unit/test_front_door.py tests/integration/test_gateway_*.py \
        tests/integration/test_redis_ratelimit.py
fi
.venv/bin/pytest -q -p no:randomly "$@"
