#!/usr/bin/env bash
# Ensure a single-node etcd answers on 127.0.0.1:2379 (idempotent).
#
# - installs Debian's etcd-server package when the `etcd` binary is missing;
# - does nothing more when an etcd already answers on the client port;
# - otherwise starts one in the background (data dir under /tmp, log beside
#   it) and waits, with a deadline, until /health says it is healthy.
#
# Environment (all optional):
#   QANAT_ETCD_HOST       client/peer host              (127.0.0.1)
#   QANAT_ETCD_PORT       client port                   (2379)
#   QANAT_ETCD_PEER_PORT  peer port                     (2380)
#   QANAT_ETCD_DATA       data dir                      (/tmp/qanat-etcd)
#   QANAT_ETCD_WAIT       seconds to wait for health    (30)
# Exits 0 when etcd is healthy, non-zero with a message on stderr otherwise.
set -euo pipefail

host="${QANAT_ETCD_HOST:-127.0.0.1}"
port="${QANAT_ETCD_PORT:-2379}"
peer_port="${QANAT_ETCD_PEER_PORT:-2380}"
data="${QANAT_ETCD_DATA:-/tmp/qanat-etcd}"
wait_s="${QANAT_ETCD_WAIT:-30}"
log="${data%/}.log"
client_url="http://${host}:${port}"
peer_url="http://${host}:${peer_port}"

say() { echo "etcd.sh: $*" >&2; }

healthy() {
    # etcd answers {"health":"true",...} on GET /health when it has a leader.
    curl -fsS --max-time 2 "${client_url}/health" 2>/dev/null | grep -q '"health":"true"'
}

if healthy; then
    say "etcd already healthy at ${client_url}"
    exit 0
fi

etcd_bin="$(command -v etcd || true)"
if [[ -z "${etcd_bin}" ]]; then
    say "etcd binary not found; installing Debian package etcd-server"
    sudo=""
    if [[ "$(id -u)" != "0" ]]; then
        if command -v sudo >/dev/null; then sudo="sudo -n"; else
            say "not root and no sudo: install etcd-server (apt-get install etcd-server) by hand"
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale on a fresh machine: update first
    # when the package is unknown to apt.
    if ! apt-cache show etcd-server >/dev/null 2>&1; then
        ${sudo} apt-get update -qq
    fi
    if ! ${sudo} apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; then
        ${sudo} apt-get update -qq
        ${sudo} apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
    fi
    # The package may have started its own service on the default ports; that
    # one is fine to use when it answers.
    etcd_bin="$(command -v etcd || true)"
    if [[ -z "${etcd_bin}" ]]; then
        say "apt-get installed etcd-server but no 'etcd' binary is on PATH"
        exit 1
    fi
fi

if ! healthy; then
    mkdir -p "${data}"
    chmod 700 "${data}"
    say "starting ${etcd_bin} at ${client_url} (data ${data}, log ${log})"
    # setsid + nohup: the server outlives this script and the shell that ran it.
    setsid nohup "${etcd_bin}" \
        --name qanat \
        --data-dir "${data}" \
        --listen-client-urls "${client_url}" \
        --advertise-client-urls "${client_url}" \
        --listen-peer-urls "${peer_url}" \
        --initial-advertise-peer-urls "${peer_url}" \
        --initial-cluster "qanat=${peer_url}" \
        --initial-cluster-state new \
        >"${log}" 2>&1 </dev/null &
    echo $! >"${data%/}.pid"
fi

deadline=$((SECONDS + wait_s))
until healthy; do
    if ((SECONDS >= deadline)); then
        say "etcd did not become healthy at ${client_url} within ${wait_s}s; last log lines of ${log}:"
        tail -n 20 "${log}" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 0.2
done
say "etcd healthy at ${client_url}"
