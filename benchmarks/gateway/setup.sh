#!/usr/bin/env bash
# Install what the gateway benchmark drives: wrk (the load generator) and
# Debian's nginx (the reference reverse proxy). Idempotent; run as root.
#   bash benchmarks/gateway/setup.sh
# Python side (aiohttp, uvloop, httptools) comes with the project's dev extras.
set -euo pipefail
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if ((${#need[@]})); then
    apt-get update -qq
    # nginx-light is gone from newer Debian releases; plain nginx is the same binary set.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; then
        need=("${need[@]/nginx-light/nginx}")
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
fi
# The Debian package starts a system nginx on port 80; the benchmark runs its own.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
fi
wrk --version 2>&1 | head -1 || true
nginx -v
