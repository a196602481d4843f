"""Stores: ``memory://``, ``sqlite:///file.db``. Choose with ``--store`` / ``ANTILOOP_STORE``."""

from __future__ import annotations

import time

from .._util import Clock
from ..errors import ConfigError
from .base import CLAIMED, DEAD, DONE, RECEIVED, RETENTION_S, DeadLetter, InboxEntry, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

DEFAULT_STORE = "sqlite:///bot_status.db"

__all__ = [
    "CLAIMED", "DEAD", "DEFAULT_STORE", "DONE", "RECEIVED", "RETENTION_S", "DeadLetter",
    "InboxEntry", "MemoryStore", "SQLiteStore", "Store", "open_store",
]


def open_store(url: str = DEFAULT_STORE, *, clock: Clock = time.time) -> Store:
    """Build (not yet open) the store a URL names."""
    if url.startswith("memory://"):
        return MemoryStore(url, clock=clock)
    if url.startswith("sqlite:///"):
        return SQLiteStore(url, clock=clock)
    if url.startswith(("redis://", "rediss://")):
        try:
            from .redis import RedisStore
        except ImportError as exc:
            raise ConfigError(
                f"the Redis store ({url.split('@')[-1]}) needs redis-py: "
                "pip install 'antiloop[redis]'"
            ) from exc
        return RedisStore(url, clock=clock)
    raise ConfigError(
        f"unknown store URL {url!r}: use sqlite:///bot_status.db (relative), "
        "sqlite:////abs/path.db or memory://"
    )
