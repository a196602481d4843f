"""The Store protocol: everything durable goes through it (inbox, ledger, windows, sends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .._util import Identity

RECEIVED = "received"
CLAIMED = "claimed"
DONE = "done"
DEAD = "dead"

RETENTION_S = 25 * 3600
"""Finished inbox entries are kept at least this long (Telegram re-delivers for up to 24 h)."""


@dataclass
class InboxEntry:
    bot_id: int
    update_id: int
    update: dict[str, Any]
    order_key: int | None
    state: str
    attempts: int
    received_at: float
    error: str | None = None


@dataclass
class DeadLetter:
    bot_id: int
    update_id: int
    update: dict[str, Any] | None
    attempts: int
    error: str
    died_at: float


class Store(Protocol):
    """One interface, several backends (``memory://``, ``sqlite:///file.db``).

    All methods are coroutines and never block the event loop. Writes issued concurrently are
    committed together (group commit) where the backend can.
    """

    url: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- inbox --------------------------------------------------------------------------
    async def add_batch(
        self, bot_id: int, updates: list[dict[str, Any]], owner: Identity | None, lease_s: float
    ) -> list[InboxEntry]:
        """Insert a getUpdates batch or webhook update in one transaction.

        Updates already in the inbox are skipped (counted as suppressed ``redelivered``);
        malformed ones are recorded as dead letters. The new entries are returned, claimed by
        ``owner`` when given (attempt 1), else left ``received``.
        """
        ...

    async def recover(
        self, bot_id: int, owner: Identity, lease_s: float, *, take_all: bool, limit: int
    ) -> list[InboxEntry]:
        """Claim unfinished entries in update order: ``received`` ones, ``claimed`` ones whose
        lease expired, or every claimed one when ``take_all`` (the previous holder is known to
        be gone). Each claim counts as an attempt."""
        ...

    async def complete(self, bot_id: int, update_id: int, owner: Identity) -> None: ...

    async def fail(
        self, bot_id: int, update_id: int, error: str, *, dead: bool, owner: Identity
    ) -> int:
        """Record a failed attempt; ``dead`` parks it as a dead letter. Returns attempts so far."""
        ...

    async def release(self, bot_id: int, update_ids: list[int],
                      owner: Identity | None = None) -> None:
        """Give claimed entries back (``received``) so the next holder handles them at once.
        A graceful release gives the claim's attempt back (it did not fail).
        With ``owner``, only that owner's claims (and, where the backend fences, only while its
        fencing token is current)."""
        ...

    # -- ledger of sends (replay safety) --------------------------------------------------
    async def sends_for(self, bot_id: int, update_id: int) -> dict[int, Any]:
        """Results of the sends already made while handling this update, by ordinal."""
        ...

    async def record_send(
        self, bot_id: int, update_id: int, ordinal: int, method: str, result: Any
    ) -> None: ...

    # -- windows and counters ---------------------------------------------------------------
    async def hit_window(self, bot_id: int, key: str, window_s: float) -> bool:
        """Atomically: True if ``key`` was recorded less than ``window_s`` ago (a duplicate);
        otherwise record it now and return False."""
        ...

    async def become_exclusive(self, bot_id: int) -> None:
        """Called once this process holds the bot's instance lock: it is now the only writer of
        the bot's windows, so the backend may answer ``hit_window`` locally."""
        ...

    async def count_suppressed(self, bot_id: int, reason: str, n: int = 1) -> None: ...

    # -- operations ---------------------------------------------------------------------------
    async def counts(self, bot_id: int) -> dict[str, int]:
        """``{"pending", "in_flight", "done", "dead"}``."""
        ...

    async def suppressed(self, bot_id: int) -> dict[str, int]: ...

    async def dead_letters(self, bot_id: int, limit: int = 100) -> list[DeadLetter]: ...

    async def retry_dead(self, bot_id: int, update_id: int) -> bool: ...

    async def drop_dead(self, bot_id: int, update_id: int) -> bool: ...

    async def purge(self, bot_id: int, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` finished entries older than ``older_than`` (and old windows)."""
        ...

    async def reset(self, bot_id: int) -> None: ...

    async def bot_ids(self) -> list[int]: ...
