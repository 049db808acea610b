#!/usr/bin/env bash
# Compiles a copy of src/ with mypyc into DIR (DIR/src, build log in DIR/build.log);
# the one place that says which modules are compiled and how. Used by mypyc_costs.sh
# and mypyc_tests.sh; nothing compiled is shipped.
#   bash benchmarks/gateway/mypyc_build.sh DIR        (2-3 minutes of gcc)
# Then PYTHONPATH=DIR/src imports the compiled modules (the .so next to each .py).
set -euo pipefail
DIR=${1:?usage: mypyc_build.sh DIR}
cd "$(dirname "$0")/../.."
ROOT=$PWD
# The gateway's hot path. Left out, and why:
# - gateway/filters_ratelimit.py, gateway/filters_traffic.py: pydantic models make
#   mypyc's code generation fail;
# - gateway/body.py: an async generator (not implemented in mypyc);
# - the rest of gateway/ and http/: off the per-request path (config, reload, admin,
#   metrics, listening sockets ...), nothing to buy.
MODULES=(
  gateway/headers.py gateway/writer.py gateway/hardening.py gateway/normalize.py
  gateway/routing.py gateway/proxy.py gateway/filters.py gateway/upstream.py
  gateway/instance_health.py gateway/connection.py gateway/app.py gateway/observe.py
  gateway/filters_auth.py gateway/request.py
  http/wire.py http/coalesce.py http/deadlines.py http/response.py http/sending.py
  http/connection.py http/pool.py
)
mkdir -p "$DIR"; rm -rf "$DIR/src"
cp -r src "$DIR/src"
find "$DIR/src" -name __pycache__ -prune -exec rm -rf {} +
cd "$DIR/src"
# Filters written in interpreted modules (and in users' code) subclass the compiled
# HookFilter, which needs mypyc_attr(allow_interpreted_subclasses=True); mypy_extensions
# comes with mypy (a dev extra), not with a plain install, so the source does not say it.
sed -i 's/^class HookFilter:/@mypyc_attr(allow_interpreted_subclasses=True)\nclass HookFilter:/' \
    qanat/gateway/filters.py
sed -i 's/^from typing import Any, Protocol$/from typing import Any, Protocol\n\nfrom mypy_extensions import mypyc_attr/' \
    qanat/gateway/filters.py
grep -q '^@mypyc_attr' qanat/gateway/filters.py \
    && grep -q '^from mypy_extensions import mypyc_attr' qanat/gateway/filters.py \
    || { echo "mypyc_build.sh: the HookFilter edit no longer applies" >&2; exit 1; }
"$ROOT/.venv/bin/mypyc" "${MODULES[@]/#/qanat/}" > "$DIR/build.log" 2>&1 \
    || { tail -20 "$DIR/build.log" >&2; exit 1; }
