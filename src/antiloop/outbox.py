"""The send side: every Bot API call a handler makes goes through the Outbox.

In order, for one call:

1. **Replay.** The n-th side-effecting call while handling update U is ordinal n. When U is
   handled again (after a crash or a failed attempt), a call whose ordinal is already recorded
   is not made again: its recorded result is returned.
2. **No repeated replies.** ``sendMessage`` of the same text to the same chat within
   ``reply_window`` seconds (a Store window, so across processes) is not sent again unless the
   call says ``allow_repeat=True``; it is counted (``repeat_reply``) and returns the earlier
   result when this process made it, else ``None``. A re-run of an update (attempt > 1) is not
   held back by the window: it may be its own, taken by an attempt that died before sending.
3. **Flow control** (:mod:`antiloop.ratelimit`): proactive token buckets on message-sending
   methods (off with ``rate_limits=False``); a 429 pauses exactly the scope it hit for
   ``retry_after`` seconds, then the call is retried, up to ``max_429_retries`` times.
4. **Record.** One store write (``record_send``) after Telegram accepted the call. If that
   write fails, the result is kept in memory and recorded when the update is re-run here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._util import Clock
from .errors import LockError, RetryAfter
from .ratelimit import ChatKey, FlowControl, RateLimits, Sleep

if TYPE_CHECKING:
    from .context import Context
    from .store.base import Store

log = logging.getLogger("antiloop.outbox")

ANSWER_KEY = -1
"""The callback answer is recorded under this fixed ledger key (handler calls are ordinals
1, 2, 3, ...), whenever it happens: a timer's answer never shifts the numbering."""
_RECENT_MAX = 1024


class API(Protocol):
    bot_id: int

    async def call(self, method: str, **params: Any) -> Any: ...


def is_read_only(method: str) -> bool:
    return method[:3].lower() == "get"


def _chat_of(params: dict[str, Any]) -> ChatKey | None:
    chat = params.get("chat_id")
    if isinstance(chat, bool) or not isinstance(chat, int | str):
        return None
    if isinstance(chat, str) and chat.lstrip("-").isdigit():
        return int(chat)
    return chat


def _cost(method: str, params: dict[str, Any]) -> int:
    media = params.get("media") if method == "sendMediaGroup" else None
    return len(media) if isinstance(media, list) and media else 1


class Outbox:
    """Replay-safe, loop-safe, rate-limited Bot API calls.

    ``rate_limits``: ``True`` (the defaults of :class:`~antiloop.ratelimit.RateLimits`), a
    ``RateLimits``, or ``False`` (no proactive limits; 429 handling stays).
    ``reply_window``: seconds in which the same text to the same chat is not sent twice
    (``0`` disables). ``clock``/``sleep``: monotonic seconds and how to wait (tests pass fakes).
    """

    def __init__(
        self,
        api: API,
        store: Store,
        *,
        rate_limits: bool | RateLimits = True,
        reply_window: float = 3.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_429_retries: int = 5,
        lock_valid: Callable[[], bool] = lambda: True,
    ) -> None:
        self.api = api
        self.lock_valid = lock_valid
        self.store = store
        self.reply_window = reply_window
        self.max_429_retries = max_429_retries
        limits = RateLimits() if rate_limits is True else rate_limits or None
        self.flow = FlowControl(limits, clock=clock, sleep=sleep)
        self._recent: OrderedDict[str, Any] = OrderedDict()  # repeat key -> the sent result
        self._unrecorded: OrderedDict[tuple[int, int, int], Any] = OrderedDict()

    async def call(
        self,
        ctx: Context | None,
        method: str,
        params: dict[str, Any],
        allow_repeat: bool = False,
        *,
        key: int | None = None,
    ) -> Any:
        """Make one call. ``key`` records it under a fixed ledger key instead of the next
        ordinal (antiloop uses it for the callback answer)."""
        clean = {k: v for k, v in params.items() if v is not None}
        if ctx is None or is_read_only(method):  # not part of an update's ledger
            if await self._is_repeat(None, method, clean, allow_repeat):
                return self._recent.get(self._repeat_key(clean))
            result = await self._send(method, clean)
            if self._takes_window(method, clean):
                self._remember(self._recent, self._repeat_key(clean), result)
            return result
        # Barrier: the previous call's record must be durable before the next call goes out, so
        # at most one accepted-but-unrecorded call exists per update at any time.
        await self.settle(ctx)
        ordinal = key if key is not None else ctx.next_ordinal()
        done, result = ctx.replayed_result(ordinal)
        if done:
            log.info("update %s: call %d (%s) was already made before a restart; skipped",
                     ctx.update_id, ordinal, method)
            return result
        if self._unrecorded:
            done, result = await self._record_late(ctx, ordinal, method)
            if done:
                return result
        if await self._is_repeat(ctx, method, clean, allow_repeat):
            earlier = self._recent.get(self._repeat_key(clean))
            await self.store.record_send(ctx.bot_id, ctx.update_id, ordinal, method, earlier)
            return earlier
        if not self.lock_valid():
            raise LockError(f"update {ctx.update_id}: {method} not sent: this process no longer "
                            "holds the lock (the new holder re-runs the update)")
        result = await self._send(method, clean)
        # Recorded behind: the write is queued now (the same single store write as awaiting it
        # here) and committed with the next group commit while the handler goes on; the next
        # call of this update, and the update's completion, wait for it (``settle``).
        nowait = getattr(self.store, "record_send_nowait", None)
        record: asyncio.Future[Any] = (
            nowait(ctx.bot_id, ctx.update_id, ordinal, method, result) if nowait is not None
            else asyncio.ensure_future(
                self.store.record_send(ctx.bot_id, ctx.update_id, ordinal, method, result)))
        ctx.pending_records.append((ordinal, result, record))
        if self._takes_window(method, clean):
            self._remember(self._recent, self._repeat_key(clean), result)
        return result

    async def settle(self, ctx: Context) -> None:
        """Wait until every call this update made is recorded in the store. If a record failed,
        the call's result is kept in this process (a re-run here skips the call and records it
        then) and the store's error is raised."""
        while ctx.pending_records:
            pending, ctx.pending_records = ctx.pending_records, []
            error: BaseException | None = None
            for ordinal, result, record in pending:
                try:
                    await record
                except BaseException as exc:
                    # Telegram has it but the ledger does not: remember it here, so a re-run
                    # of this update in this process does not make the call again.
                    self._remember(self._unrecorded, (ctx.bot_id, ctx.update_id, ordinal), result)
                    error = error or exc
            if error is not None:
                raise error

    def take_settled(self, ctx: Context) -> BaseException | None:
        """For records that have all finished: clear them, keep failed calls' results in this
        process (as :meth:`settle` does), and return the first error, if any."""
        pending, ctx.pending_records = ctx.pending_records, []
        error: BaseException | None = None
        for ordinal, result, record in pending:
            exc = asyncio.CancelledError() if record.cancelled() else record.exception()
            if exc is not None:
                self._remember(self._unrecorded, (ctx.bot_id, ctx.update_id, ordinal), result)
                error = error or exc
        return error

    async def _record_late(self, ctx: Context, ordinal: int, method: str) -> tuple[bool, Any]:
        key = (ctx.bot_id, ctx.update_id, ordinal)
        if key not in self._unrecorded:
            return False, None
        result = self._unrecorded[key]
        await self.store.record_send(ctx.bot_id, ctx.update_id, ordinal, method, result)
        del self._unrecorded[key]
        log.info("update %s: call %d (%s) was made by an earlier attempt; recorded now, skipped",
                 ctx.update_id, ordinal, method)
        return True, result

    # -- the repeat-reply window -------------------------------------------------------------
    def _takes_window(self, method: str, params: dict[str, Any]) -> bool:
        return (self.reply_window > 0 and method == "sendMessage"
                and isinstance(params.get("text"), str) and "chat_id" in params)

    @staticmethod
    def _repeat_key(params: dict[str, Any]) -> str:
        digest = hashlib.blake2b(str(params.get("text")).encode(), digest_size=12).hexdigest()
        return f"rr:{params.get('chat_id')}:{digest}"

    async def _is_repeat(
        self, ctx: Context | None, method: str, params: dict[str, Any], allow_repeat: bool
    ) -> bool:
        if allow_repeat or not self._takes_window(method, params):
            return False
        hit = await self.store.hit_window(self.api.bot_id, self._repeat_key(params),
                                          self.reply_window)
        if not hit:
            return False
        if ctx is not None and ctx.attempt > 1:
            # A re-run: the window may be this update's own, taken by an attempt that died (or
            # failed) before the send surely reached Telegram. Send: at worst a duplicate,
            # never a lost reply.
            return False
        await self.store.count_suppressed(self.api.bot_id, "repeat_reply")
        log.info("the same text was sent to chat %s less than %.1f s ago; not sent again "
                 "(pass allow_repeat=True to send it)", params.get("chat_id"), self.reply_window)
        return True

    @staticmethod
    def _remember(table: OrderedDict[Any, Any], key: Any, result: Any) -> None:
        table[key] = result
        table.move_to_end(key)
        if len(table) > _RECENT_MAX:
            table.popitem(last=False)

    # -- flow control and 429 ----------------------------------------------------------------
    async def _send(self, method: str, params: dict[str, Any]) -> Any:
        chat = _chat_of(params)
        cost = _cost(method, params)
        attempt = 0
        while True:
            await self.flow.wait(method, chat, cost)
            try:
                return await self.api.call(method, **params)
            except RetryAfter as exc:
                attempt += 1
                self.flow.pause(chat, exc.retry_after)
                if attempt > self.max_429_retries:
                    raise
                log.warning("%s: flood control, %s paused for %.0f s (retry %d of %d)", method,
                            f"chat {chat}" if chat is not None else "every call",
                            exc.retry_after, attempt, self.max_429_retries)
