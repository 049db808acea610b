"""The etcd backend for discovery and config: ``etcd://host:port[,host:port...]``.

``EtcdRegistry`` (``qanat.backends.etcd_registry``) and ``EtcdConfigStore``
(``qanat.backends.etcd_config``) implement the ``Registry`` and ``ConfigStore``
ports on a real etcd v3 cluster through ``aetcd`` (``pip install 'qanat[etcd]'``).

URL options: ``?prefix=/qanat`` (the key namespace; tests use a fresh one each
time), ``timeout=5`` (seconds per request), ``connect_timeout=3`` (seconds
``open`` waits per endpoint before ``BackendUnreachable``). Credentials go in
the userinfo: ``etcd://user:password@host:2379``.

Key layout, lease and keepalive behaviour, reconnects and compaction:
``docs/etcd.md``.
"""

from __future__ import annotations

from qanat.backends._etcd import WatchCompacted
from qanat.backends._etcd_util import EtcdSettings, parse_etcd_url
from qanat.backends.etcd_config import EtcdConfigStore
from qanat.backends.etcd_registry import EtcdRegistry

__all__ = ["EtcdConfigStore", "EtcdRegistry", "EtcdSettings", "WatchCompacted", "parse_etcd_url"]
