#!/usr/bin/env bash
# What the compiled build buys, in instructions per request: builds the wheel
# (scripts/build_wheel.sh: hatch_build.py compiles the modules pyproject.toml lists)
# and runs costs.sh on it and on the interpreted tree, side by side.
#   bash benchmarks/gateway/mypyc_costs.sh [plain|full] [N]      (about a minute of gcc)
set -euo pipefail
cd "$(dirname "$0")/../.."
STACK=${1:-plain}; N=${2:-2000}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
bash scripts/build_wheel.sh "$WORK"
echo "interpreted: $(PYTHONHASHSEED=0 bash benchmarks/gateway/costs.sh "$STACK" "$N" | tail -1)"
echo "compiled:    $(PYTHONPATH="$WORK/site" PYTHONHASHSEED=0 bash benchmarks/gateway/costs.sh "$STACK" "$N" | tail -1)"
