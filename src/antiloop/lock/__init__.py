"""Instance locks: ``file:PATH`` (flock, one machine). Choose with ``--lock`` / ``ANTILOOP_LOCK``."""

from __future__ import annotations

import time
from pathlib import Path

from .._util import Clock, Identity
from ..errors import ConfigError
from .base import InstanceLock
from .file import FileLock, HolderInfo, LockStatus

DEFAULT_LOCK_NAME = ".bot_instance.lock"

__all__ = ["DEFAULT_LOCK_NAME", "FileLock", "HolderInfo", "InstanceLock", "LockStatus",
           "default_lock_url", "open_lock"]


def default_lock_url(store_url: str) -> str:
    """``file:.bot_instance.lock`` beside the SQLite file; for a Redis store, the Redis lease
    on the same server (a file lock would let each machine poll); in the cwd otherwise."""
    if store_url.startswith(("redis://", "rediss://")):
        return store_url
    if store_url.startswith("sqlite:///"):
        db = Path(store_url[len("sqlite:///"):].split("?", 1)[0])
        return f"file:{db.parent / DEFAULT_LOCK_NAME}" if str(db.parent) != "." else f"file:{DEFAULT_LOCK_NAME}"
    return f"file:{DEFAULT_LOCK_NAME}"


def open_lock(url: str, identity: Identity, bot_id: int, *, clock: Clock = time.time) -> InstanceLock:
    if url.startswith("file:"):
        path = url[len("file:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError("--lock file: needs a path, e.g. file:.bot_instance.lock")
        return FileLock(path, identity, bot_id, clock=clock)
    if url.startswith(("redis://", "rediss://")):
        try:
            from .redis import RedisLock
        except ImportError as exc:
            raise ConfigError(
                f"the Redis lock ({url.split('@')[-1]}) needs redis-py: pip install 'antiloop[redis]'"
            ) from exc
        return RedisLock(url, identity, bot_id, clock=clock)  # lease and prefix from the URL
    raise ConfigError(f"unknown lock URL {url!r}: use file:.bot_instance.lock")
