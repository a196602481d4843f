"""The InstanceLock protocol: at most one process of a bot polls and handles at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .file import HolderInfo, LockStatus


class InstanceLock(Protocol):
    """``file:PATH`` (a kernel flock, one machine) or ``redis://`` (a lease with a fencing token,
    many machines). The runtime takes it, keeps it alive with :meth:`heartbeat`, checks
    :meth:`valid` before each poll and each handler, and stops at once when :attr:`lost` is set."""

    fence: int
    """Fencing token of the current holding (0 when the lock needs none)."""
    lost: asyncio.Event
    """Set when the lock was taken away from this process (a lease expired, a newer holder)."""

    @property
    def url(self) -> str: ...

    @property
    def held(self) -> bool: ...

    def valid(self) -> bool: ...

    def try_acquire(self) -> bool: ...

    async def acquire(self, stop: asyncio.Event,
                      on_wait: Callable[[LockStatus], None] | None = None) -> bool: ...

    async def heartbeat(self, stop: asyncio.Event) -> None: ...

    def release(self) -> None: ...

    def status(self) -> LockStatus: ...

    def read_holder(self) -> HolderInfo | None: ...

    def standbys(self) -> list[dict[str, Any]]: ...

    def request_takeover(self) -> HolderInfo | None: ...
