#!/usr/bin/env bash
# What compiling the gateway's hot path with mypyc would buy, measured, not shipped:
# compiles a copy of src/ in a temporary directory (mypyc_build.sh: which modules, how)
# and runs costs.sh on the copy and on the tree, side by side.
#   bash benchmarks/gateway/mypyc_costs.sh [plain|full] [N]      (2-3 minutes of gcc)
# See docs/gateway-performance.md ("Fifth pass") for the numbers and what stands in
# the way of shipping it.
set -euo pipefail
cd "$(dirname "$0")/../.."
STACK=${1:-plain}; N=${2:-2000}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
bash benchmarks/gateway/mypyc_build.sh "$WORK"
echo "interpreted: $(PYTHONHASHSEED=0 bash benchmarks/gateway/costs.sh "$STACK" "$N" | tail -1)"
echo "mypyc:       $(PYTHONPATH="$WORK/src" PYTHONHASHSEED=0 bash benchmarks/gateway/costs.sh "$STACK" "$N" | tail -1)"
