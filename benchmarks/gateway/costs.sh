#!/usr/bin/env bash
# Per-request costs of one gateway process that do not depend on machine load:
# system calls (strace -c) and user-space instructions (valgrind callgrind).
#   bash benchmarks/gateway/costs.sh [plain|full] [N]        (apt: strace valgrind)
# Set PYTHONPATH=/some/copy/src to measure another build of qanat.
set -euo pipefail
cd "$(dirname "$0")/../.."
STACK=${1:-plain}; N=${2:-2000}; C=8
PY=.venv/bin/python; HERE=benchmarks/gateway
command -v strace >/dev/null && command -v valgrind >/dev/null \
    || { echo "needs strace and valgrind: apt-get install -y strace valgrind" >&2; exit 2; }
WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
wait_line() {  # wait_line FILE: until the file says "listening on" (deadline 120 s), whole line
    for _ in $(seq 1200); do
        grep -q "^listening on" "$1" && [[ -z "$(tail -c1 "$1")" ]] && return 0; sleep 0.1
    done
    echo "no 'listening on' in $1" >&2; cat "$1" >&2; exit 1
}
$PY benchmarks/upstream.py --port 0 > "$WORK/up" 2>&1 & PIDS+=($!)
wait_line "$WORK/up"; UP=$(sed -n 's/^listening on //p' "$WORK/up")
start_gw() {  # start_gw PREFIX...: the gateway under PREFIX, sets GW and ADDR and HDRS
    "$@" $PY $HERE/gateway_target.py --port 0 --upstream "$UP" --stack "$STACK" > "$WORK/gw" 2>&1 &
    GW=$!; PIDS+=($GW); wait_line "$WORK/gw"
    ADDR=$(sed -n 's/^listening on //p' "$WORK/gw")
    export HDRS; HDRS=$(sed -n 's/^info header //p' "$WORK/gw" | paste -sd'|')
    $PY $HERE/closed_loop_client.py "$ADDR" 200 4  # warm-up
}
# 1. system calls
start_gw env
strace -c -f -p "$GW" -o "$WORK/strace" 2>/dev/null & ST=$!
sleep 1  # strace attaches to every thread of the process first
$PY $HERE/closed_loop_client.py "$ADDR" "$N" $C
kill -INT $ST; wait $ST || true; kill "$GW"
echo "$STACK: system calls per request:" \
    "$(awk -v n="$N" 'NR>2 && $NF!="total" && $4/n>=0.01 {printf "%s %.2f  ", $NF, $4/n}' "$WORK/strace")"
# 2. user-space instructions, counted from a reset to a dump around the N requests
start_gw valgrind --tool=callgrind --callgrind-out-file="$WORK/cg"
callgrind_control -z "$GW" > /dev/null 2>&1
$PY $HERE/closed_loop_client.py "$ADDR" "$N" $C
callgrind_control -d "$GW" > /dev/null 2>&1
IR=$(awk '/^summary:/ {print $2; exit}' "$WORK/cg.1")
echo "$STACK: user-space instructions per request: $((IR / N))"
