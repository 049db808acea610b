"""The embedded default backend: discovery and config in one SQLite file.

``sqlite:///.qanat/control.db`` is what a newcomer gets with no server
installed. The file is safe to share between the processes of one machine
(WAL mode, busy timeout, ``BEGIN IMMEDIATE`` writes); watchers see changes
made by any of them within about 25 ms. See ``sqlite_registry`` and
``sqlite_config`` for the details.
"""

from qanat.backends.sqlite_config import SqliteConfigStore
from qanat.backends.sqlite_registry import SqliteRegistry

__all__ = ["SqliteConfigStore", "SqliteRegistry"]
