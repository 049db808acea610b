#!/usr/bin/env bash
# What compiling the gateway's hot path with mypyc would buy, measured, not shipped:
# copies src/ to a temporary directory, compiles MODULES there with mypyc (from the
# dev extras), and runs costs.sh on the copy and on the tree, side by side.
#   bash benchmarks/gateway/mypyc_costs.sh [plain|full] [N]      (2-3 minutes of gcc)
# See docs/gateway-performance.md ("Fifth pass") for the numbers and what stands in
# the way of shipping it.
set -euo pipefail
cd "$(dirname "$0")/../.."
STACK=${1:-plain}; N=${2:-2000}
MODULES=(
  gateway/headers.py gateway/writer.py gateway/hardening.py gateway/normalize.py
  gateway/routing.py gateway/proxy.py gateway/filters.py gateway/upstream.py
  gateway/instance_health.py gateway/connection.py gateway/app.py gateway/observe.py
  gateway/filters_auth.py gateway/request.py
  http/wire.py http/coalesce.py http/deadlines.py http/response.py http/sending.py
  http/connection.py http/pool.py
)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cp -r src "$WORK/src"
cd "$WORK/src"
# Two edits mypyc needs (mypy accepts the source as it is): an annotation mypyc cannot
# infer, and filters written in interpreted modules subclass the compiled HookFilter.
sed -i 's/^        group = self._chooser.choose(headers)/        group: str | None = self._chooser.choose(headers)/' qanat/gateway/upstream.py
sed -i 's/^class HookFilter:/@mypyc_attr(allow_interpreted_subclasses=True)\nclass HookFilter:/' \
    qanat/gateway/filters.py
sed -i 's/^from typing import Any, Protocol$/from typing import Any, Protocol\n\nfrom mypy_extensions import mypyc_attr/' \
    qanat/gateway/filters.py
"$OLDPWD/.venv/bin/mypyc" "${MODULES[@]/#/qanat/}" > "$WORK/build.log" 2>&1 \
    || { tail -20 "$WORK/build.log" >&2; exit 1; }
cd "$OLDPWD"
echo "interpreted: $(PYTHONHASHSEED=0 bash benchmarks/gateway/costs.sh "$STACK" "$N" | tail -1)"
echo "mypyc:       $(PYTHONPATH="$WORK/src" PYTHONHASHSEED=0 bash benchmarks/gateway/costs.sh "$STACK" "$N" | tail -1)"
