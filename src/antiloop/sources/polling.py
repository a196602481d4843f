"""The polling source: getUpdates on the lock holder only; store a batch, then confirm it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from .._util import Identity, sleep_or_stop
from ..botapi import BotAPI
from ..errors import (
    Conflict,
    NetworkError,
    RetryAfter,
    ServerError,
    StoreError,
    TelegramError,
    Unauthorized,
)
from ..store.base import Store
from ..worker import Worker

log = logging.getLogger("antiloop.polling")


class Backoff:
    """Exponential backoff with jitter, and a log line only when the reason changes (or every
    ``repeat_log_s`` seconds), never one per retry."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, repeat_log_s: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self.repeat_log_s = repeat_log_s
        self.failures = 0
        self._reason = ""
        self._logged_at = 0.0

    def delay(self) -> float:
        self.failures += 1
        raw = min(self.cap, self.base * 2 ** (self.failures - 1))
        return float(raw * random.uniform(0.5, 1.0))

    def should_log(self, reason: str) -> bool:
        now = time.monotonic()
        if reason != self._reason or now - self._logged_at >= self.repeat_log_s:
            self._reason = reason
            self._logged_at = now
            return True
        return False

    def reset(self) -> bool:
        """Back to normal; True if there was trouble before (worth one 'recovered' line)."""
        had = self.failures > 0
        self.failures = 0
        self._reason = ""
        return had


class PollingSource:
    """Put updates into the inbox durably, then confirm them to Telegram.

    Telegram confirms update N when getUpdates is called with ``offset > N``, so each batch is
    committed to the store before the next getUpdates is sent. The first call after start uses no
    offset: Telegram returns every unconfirmed update, and those already in the inbox are skipped
    by key (never by a "highest id seen" watermark, since ids restart at random after a week).
    """

    def __init__(
        self,
        api: BotAPI,
        store: Store,
        worker: Worker,
        identity: Identity,
        *,
        timeout: int = 30,
        limit: int = 100,
        allowed_updates: list[str] | None = None,
        delete_webhook: bool = False,
        lease_s: float = 60.0,
        lock_valid: Callable[[], bool] = lambda: True,
    ) -> None:
        self.api = api
        self.lock_valid = lock_valid
        self.store = store
        self.worker = worker
        self.identity = identity
        self.timeout = max(0, min(int(timeout), 50))
        self.limit = max(1, min(int(limit), 100))
        self.allowed_updates = allowed_updates
        self.delete_webhook = delete_webhook
        self.lease_s = lease_s
        self.offset: int | None = None
        self.batches = 0
        self.received = 0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        name = self.api.name
        while not stop.is_set():
            await self.worker.wait_for_room()
            if not self.lock_valid():
                log.error("%s: not polling: this process no longer holds the lock", name)
                return
            params: dict[str, Any] = {"timeout": self.timeout, "limit": self.limit}
            if self.offset is not None:
                params["offset"] = self.offset
            if self.allowed_updates is not None:
                params["allowed_updates"] = self.allowed_updates
            try:
                batch = await self.api.call("getUpdates", **params)
            except Conflict as exc:
                if exc.kind == "webhook":
                    if self.delete_webhook:
                        log.warning("%s: a webhook is set; deleting it (--delete-webhook given) "
                                    "and switching to polling; pending updates are kept", name)
                        try:
                            await self.api.call("deleteWebhook", drop_pending_updates=False)
                            continue
                        except Unauthorized:
                            raise
                        except TelegramError as del_exc:
                            log.warning("%s: deleteWebhook failed: %s; retrying with backoff",
                                        name, del_exc)
                    if backoff.should_log("webhook"):
                        log.error(
                            "%s: a webhook is set, so Telegram refuses getUpdates (409: %s). "
                            "This bot receives its updates by webhook. To switch to polling run "
                            "`antiloop run ... --delete-webhook` (pending updates are kept), or "
                            "remove the webhook where it was set. Waiting and retrying.",
                            name, exc.description)
                else:
                    if backoff.should_log("poller"):
                        log.error(
                            "%s: another process is calling getUpdates for this bot outside "
                            "antiloop's lock (409: %s). Every antiloop instance of this bot "
                            "shares the lock, so this one is something else: an old deploy, a "
                            "framework's own polling loop, a second machine, or an instance "
                            "with another --lock. Run `antiloop status` to see who holds our "
                            "lock, and stop the other poller. Backing off and retrying.",
                            name, exc.description)
                if await sleep_or_stop(stop, backoff.delay()):
                    return
                continue
            except RetryAfter as exc:
                log.warning("%s: getUpdates flood control, waiting %.0f s", name, exc.retry_after)
                if await sleep_or_stop(stop, exc.retry_after):
                    return
                continue
            except Unauthorized:
                raise
            except (NetworkError, ServerError, TelegramError) as exc:
                if backoff.should_log(type(exc).__name__):
                    log.warning("%s: getUpdates failed: %s; retrying with backoff", name, exc)
                if await sleep_or_stop(stop, backoff.delay()):
                    return
                continue
            if backoff.reset():
                log.info("%s: polling again", name)
            if not isinstance(batch, list) or not batch:
                continue
            if not await self._store_batch(batch, stop):
                return
            ids = [u["update_id"] for u in batch
                   if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
            if ids:
                self.offset = max(ids) + 1

    async def _store_batch(self, batch: list[Any], stop: asyncio.Event) -> bool:
        """Commit the batch to the inbox; retry (never confirm) until it is stored."""
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            if not self.lock_valid():
                log.error("a batch of %d updates was not stored: this process no longer holds "
                          "the lock; the new holder gets them from Telegram", len(batch))
                return False
            try:
                entries = await self.store.add_batch(self.worker.bot_id, batch, self.identity,
                                                     self.lease_s)
                break
            except StoreError as exc:
                if backoff.should_log(str(exc)):
                    log.error("%s; holding %d updates unconfirmed and retrying", exc, len(batch))
                if await sleep_or_stop(stop, backoff.delay()):
                    return False
        if backoff.reset():
            log.info("the store accepts writes again; polling resumes")
        self.batches += 1
        self.received += len(batch)
        self.worker.submit(entries, fresh=True)
        return True
