"""Webhook delivery, the way Telegram does it.

* Each update is POSTed as JSON with ``X-Telegram-Bot-Api-Secret-Token`` when a secret
  is set.
* Updates of one chat go one at a time, in order; an update that fails blocks the rest
  of its chat (other chats go on).
* At most ``max_connections`` requests are in flight at once.
* A non-2xx answer, a connection error or no answer within ``timeout`` is retried after
  0, 2, 4, 8, 16, 32 s, then 60-120 s (random), or later when the answer had a
  ``Retry-After`` header. Every delay is multiplied by ``time_scale``.
* A 2xx answer whose body is a method call (``{"method": "sendMessage", ...}``) runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp

from antiloop.testing.state import BotState, Update, WebhookConfig

__all__ = ["RETRY_SCHEDULE", "WebhookDelivery", "WebhookFaults", "retry_delay"]

RETRY_SCHEDULE: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Seconds before the 1st, 2nd, ... retry; after these, 60-120 s each."""

MethodRunner = Callable[[BotState, str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebhookFaults:
    fail_first: int = 0
    redeliver: float = 0.0


def retry_delay(failures: int, rng: random.Random) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
    if failures <= len(RETRY_SCHEDULE):
        return RETRY_SCHEDULE[failures - 1]
    return rng.uniform(60.0, 120.0)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class WebhookDelivery:
    """Delivers one bot's pending updates to its webhook until :meth:`close`."""

    def __init__(
        self,
        bot: BotState,
        config: WebhookConfig,
        session: aiohttp.ClientSession,
        *,
        time_scale: float,
        timeout: float,
        faults: Callable[[], WebhookFaults],
        rng: Callable[[], random.Random],
        on_change: Callable[[], None],
        run_method: MethodRunner,
    ) -> None:
        self.bot = bot
        self.config = config
        self._session = session
        self._time_scale = time_scale
        self._timeout = timeout
        self._faults = faults
        self._rng = rng
        self._on_change = on_change
        self._run_method = run_method
        self._semaphore = asyncio.Semaphore(config.max_connections)
        self._queues: dict[int, deque[int]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._closed = False
        headers = {"Content-Type": "application/json"}
        if config.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = config.secret_token
        self._headers = headers
        for update in list(bot.pending.values()):
            self.enqueue(update)

    def enqueue(self, update: Update) -> None:
        if self._closed:
            return
        queue = self._queues.get(update.chat_key)
        if queue is None:
            queue = self._queues[update.chat_key] = deque()
        queue.append(update.update_id)
        if update.chat_key not in self._workers:
            self._workers[update.chat_key] = asyncio.get_running_loop().create_task(
                self._run_chat(update.chat_key)
            )

    def drop(self) -> None:
        """Forget queued updates (drop_pending_updates); the one in flight finishes."""
        for queue in self._queues.values():
            queue.clear()

    def cancel(self) -> list[asyncio.Task[None]]:
        """Stop delivering now; returns the cancelled tasks. Undelivered updates stay pending."""
        self._closed = True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        self._workers.clear()
        self._queues.clear()
        return workers

    async def close(self) -> None:
        workers = self.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_chat(self, chat_key: int) -> None:
        bot = self.bot
        queue = self._queues[chat_key]
        try:
            while queue:
                update_id = queue[0]
                update = bot.pending.get(update_id)
                if update is None:
                    queue.popleft()
                    continue
                if update.expired(bot.clock()):
                    queue.popleft()
                    bot.pending.pop(update_id, None)
                    bot.stats.updates_expired += 1
                    continue
                delivered = await self._deliver(update)
                if not delivered:
                    continue  # dropped or expired while retrying: look at the queue again
                if queue and queue[0] == update_id:
                    queue.popleft()
                bot.pending.pop(update_id, None)
                faults = self._faults()
                if faults.redeliver > 0 and self._rng().random() < faults.redeliver:
                    bot.stats.updates_redelivered += 1
                    await self._attempt(update, failures=0, fail=False)
                self._on_change()
        finally:
            # No await between the empty-queue check and here, so nothing was enqueued
            # meanwhile; after an error the queue stays and the next update restarts it.
            if self._workers.get(chat_key) is asyncio.current_task():
                del self._workers[chat_key]
                if not queue:
                    self._queues.pop(chat_key, None)

    async def _deliver(self, update: Update) -> bool:
        """Attempt until a 2xx; False if the update left the queue meanwhile."""
        bot = self.bot
        failures = 0
        while True:
            fail = failures < self._faults().fail_first
            ok, retry_after = await self._attempt(update, failures=failures, fail=fail)
            if ok:
                return True
            failures += 1
            delay = retry_delay(failures, self._rng())
            if retry_after is not None:
                delay = max(delay, retry_after)
            bot.webhook_log[-1]["next_delay"] = delay
            self._on_change()
            await asyncio.sleep(delay * self._time_scale)
            if update.update_id not in bot.pending or update.expired(bot.clock()):
                return False
            queue = self._queues.get(update.chat_key)
            if not queue or queue[0] != update.update_id:
                return False

    async def _attempt(
        self, update: Update, *, failures: int, fail: bool
    ) -> tuple[bool, float | None]:
        bot = self.bot
        stats = bot.stats
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        reply: Any = None
        async with self._semaphore:
            stats.webhook_attempts += 1
            stats.updates_delivered += 1
            stats.webhook_in_flight += 1
            stats.webhook_in_flight_max = max(stats.webhook_in_flight_max, stats.webhook_in_flight)
            body = json.dumps(update.payload).encode()
            try:
                async with asyncio.timeout(self._timeout * self._time_scale):
                    async with self._session.post(
                        self.config.url, data=body, headers=self._headers
                    ) as response:
                        status = response.status
                        retry_after = _retry_after(response.headers.get("Retry-After"))
                        raw = await response.read()
                        if 200 <= status < 300 and raw[:1] == b"{":
                            with contextlib.suppress(ValueError):
                                reply = json.loads(raw)
            except TimeoutError:
                error = "Read timeout expired"
            except aiohttp.ClientConnectorError:
                error = "Connection refused"
            except aiohttp.ClientError as exc:
                error = f"Connection failed: {type(exc).__name__}"
            finally:
                stats.webhook_in_flight -= 1
        if error is None and status is not None and not 200 <= status < 300:
            error = f"Wrong response from the webhook: {status} {_reason(status)}"
        if error is None and fail:
            error = "Wrong response from the webhook: 500 Internal Server Error"
            status = 500
        ok = error is None
        bot.webhook_log.append(
            {
                "update_id": update.update_id,
                "chat_key": update.chat_key,
                "attempt": failures + 1,
                "ok": ok,
                "status": status,
                "error": error,
                "next_delay": None,
            }
        )
        if not ok:
            stats.webhook_failures += 1
            self.config.last_error_date = int(bot.clock())
            self.config.last_error_message = error
        elif isinstance(reply, dict) and isinstance(reply.get("method"), str):
            params = {k: v for k, v in reply.items() if k != "method"}
            await self._run_method(bot, reply["method"], params)
        return ok, retry_after


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
