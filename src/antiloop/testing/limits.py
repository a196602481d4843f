"""Flood control: Telegram's 429 ``Too Many Requests: retry after N``.

Three token buckets guard the message-sending methods of one bot:

* per chat: about one message a second, with a small burst;
* per group (negative chat ids): 20 messages a minute;
* global: 30 messages a second over all chats.

A request is refused when any bucket it needs is empty; a refused request takes no
token. ``retry_after`` is the whole number of seconds (at least 1) after which every
bucket has a token again. Time comes from the emulator's clock, so a test with a
:class:`~antiloop.testing.state.ManualClock` refills the buckets by advancing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FloodControl", "RateLimits"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Limits per bot. ``Emulator(rate_limits=RateLimits(...))`` changes them."""

    per_chat_per_second: float = 1.0
    """Sustained rate in one chat (private or group)."""
    per_chat_burst: int = 5
    """Messages one chat may receive at once before the rate applies."""
    per_group_per_minute: float = 20.0
    """Sustained rate (and burst) in one group or supergroup (negative chat id)."""
    global_per_second: float = 30.0
    """Sustained rate (and burst) over all chats of one bot."""

    def __post_init__(self) -> None:
        if self.per_chat_per_second <= 0 or self.per_group_per_minute <= 0:
            raise ValueError("rate limits must be positive")
        if self.global_per_second <= 0 or self.per_chat_burst < 1:
            raise ValueError("rate limits must be positive and per_chat_burst at least 1")


class _Bucket:
    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0 when one is there now)."""
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0


class FloodControl:
    """The buckets of one bot."""

    __slots__ = ("_chats", "_clock", "_global", "_groups", "limits")

    def __init__(self, limits: RateLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._global = _Bucket(limits.global_per_second, limits.global_per_second, clock())
        self._chats: dict[int, _Bucket] = {}
        self._groups: dict[int, _Bucket] = {}

    def acquire(self, chat_id: int) -> int | None:
        """Take a token for one message to ``chat_id``.

        Returns ``None`` when the message may go, else ``retry_after`` in whole seconds.
        """
        now = self._clock()
        limits = self.limits
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = _Bucket(float(limits.per_chat_burst), limits.per_chat_per_second, now)
            self._chats[chat_id] = chat
        buckets = [self._global, chat]
        if chat_id < 0:
            group = self._groups.get(chat_id)
            if group is None:
                per_minute = limits.per_group_per_minute
                group = _Bucket(per_minute, per_minute / 60.0, now)
                self._groups[chat_id] = group
            buckets.append(group)
        wait = max(bucket.wait(now) for bucket in buckets)
        if wait > 0.0:
            return max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.take()
        return None
