#!/usr/bin/env bash
# Make sure every server the test suite talks to is up on its standard local port.
# PostgreSQL, Redis, NATS (JetStream) are started by this machine kind before a session;
# we start them again if they stopped. etcd is installed from Debian's etcd-server on demand.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379 && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/qanat-redis.log || true
fi
if ! port_open 4222 && [ -x /usr/sbin/nats-server ]; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
fi
if ! port_open 5432 && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if [ -f "$here/etcd.sh" ]; then
  bash "$here/etcd.sh"
fi
echo "servers: redis $(port_open 6379 && echo up || echo DOWN), nats $(port_open 4222 && echo up || echo DOWN), postgres $(port_open 5432 && echo up || echo DOWN), etcd $(port_open 2379 && echo up || echo DOWN)"
