"""Flow control for outgoing calls: token buckets (proactive limits) and 429 pauses.

Telegram's limits: about 1 message/s per chat (short bursts are fine), 20 messages/min per
group, 30 messages/s overall. Only methods that send or edit messages are limited;
``answerCallbackQuery`` and ``get*`` never wait for a bucket. A 429 pauses exactly the scope it
hit (that chat, or everything when the call had no chat) for ``retry_after`` seconds, whether the
proactive limits are on or off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._util import Clock

Sleep = Callable[[float], Awaitable[Any]]
ChatKey = int | str

_GLOBAL = "*"  # the pause key of the global scope (never a chat id: ids are ints or "@name")
_MAX_IDLE_BUCKETS = 4096


@dataclass(frozen=True)
class RateLimits:
    """Proactive limits, as token buckets (``rate`` tokens per second, up to ``burst`` saved)."""

    per_chat: float = 1.0
    """Messages per second into one chat."""
    per_chat_burst: int = 3
    per_group: float = 20 / 60
    """Messages per second into one group (a negative chat id, or an ``@username``)."""
    per_group_burst: int = 3
    overall: float = 30.0
    """Messages per second over all chats."""
    overall_burst: int = 30


def is_limited(method: str) -> bool:
    """Methods that put a message into a chat or change one: they count against the limits."""
    m = method.lower()
    if m.startswith("send"):
        return m != "sendchataction"
    return m.startswith(("copymessage", "forwardmessage", "editmessage"))


def is_group(chat: ChatKey) -> bool:
    return isinstance(chat, str) or chat < 0


class TokenBucket:
    """``reserve`` takes tokens now (the balance may go negative: a queue of reservations) and
    says how long the caller must wait for its turn. FIFO, no lock needed in one event loop."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def reserve(self, now: float, cost: float = 1.0) -> float:
        self._refill(now)
        self.tokens -= min(cost, self.capacity)
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def idle(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class FlowControl:
    """One per Outbox. ``limits=None`` turns the buckets off; 429 pauses stay.

    With no limits and no pause in force, :meth:`wait` returns at once (two attribute reads).
    """

    def __init__(
        self, limits: RateLimits | None, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._paused: dict[ChatKey, float] = {}
        self._chats: dict[ChatKey, TokenBucket] = {}
        self._groups: dict[ChatKey, TokenBucket] = {}
        self._overall = TokenBucket(limits.overall, limits.overall_burst, clock()) if limits else None

    def pause(self, chat: ChatKey | None, seconds: float) -> float:
        """Stop every call into ``chat`` (``None``: every call) for ``seconds``; returns the end."""
        key: ChatKey = _GLOBAL if chat is None else chat
        until = self._clock() + seconds
        if until > self._paused.get(key, 0.0):
            self._paused[key] = until
        return self._paused[key]

    def paused_until(self, chat: ChatKey | None) -> float:
        """When calls into ``chat`` may go again (0.0: not paused)."""
        now = self._clock()
        ends = [self._paused.get(_GLOBAL, 0.0)]
        if chat is not None:
            ends.append(self._paused.get(chat, 0.0))
        end = max(ends)
        return end if end > now else 0.0

    async def wait(self, method: str, chat: ChatKey | None, cost: int = 1) -> None:
        """Return when a call of ``method`` into ``chat`` may be made."""
        if self._paused:
            await self._wait_pauses(chat)
        if self.limits is None or not is_limited(method):
            return
        for bucket in self._buckets(chat):
            delay = bucket.reserve(self._clock(), cost)
            if delay > 0:
                await self._sleep(delay)
        if self._paused:  # a 429 may have arrived while we waited for a token
            await self._wait_pauses(chat)

    async def _wait_pauses(self, chat: ChatKey | None) -> None:
        while True:
            now = self._clock()
            end = self.paused_until(chat)
            if not end:
                self._forget_expired(now)
                return
            await self._sleep(end - now)

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, end in self._paused.items() if end <= now]:
            del self._paused[key]

    def _buckets(self, chat: ChatKey | None) -> list[TokenBucket]:
        assert self.limits is not None and self._overall is not None
        lim = self.limits
        out: list[TokenBucket] = []
        if chat is not None:
            out.append(self._bucket(self._chats, chat, lim.per_chat, lim.per_chat_burst))
            if is_group(chat):
                out.append(self._bucket(self._groups, chat, lim.per_group, lim.per_group_burst))
        out.append(self._overall)
        return out

    def _bucket(
        self, table: dict[ChatKey, TokenBucket], chat: ChatKey, rate: float, burst: int
    ) -> TokenBucket:
        bucket = table.get(chat)
        if bucket is None:
            now = self._clock()
            if len(table) >= _MAX_IDLE_BUCKETS:  # a full bucket is the same as no bucket
                for key in [k for k, b in table.items() if b.idle(now)]:
                    del table[key]
            bucket = table[chat] = TokenBucket(rate, burst, now)
        return bucket
