"""A small in-test dispatch against the real emulator: getUpdates over HTTP, one Context per
update, ``await router(ctx)`` then ``await ctx.finish()``; chats run concurrently, each chat's
updates in order (what the worker does, without the inbox)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from antiloop import updates as U
from antiloop.botapi import BotAPI
from antiloop.context import Context
from antiloop.outbox import Outbox
from antiloop.router import Router
from antiloop.store.base import Store
from antiloop.testing import Emulator


class RecordingAPI(BotAPI):
    """The real client; also notes (clock, method, chat_id, retry_after or None) per call."""

    def __init__(self, token: str, url: str, clock: Any) -> None:
        super().__init__(token, url)
        self.clock = clock
        self.log: list[tuple[float, str, Any, float | None]] = []

    async def call(self, method: str, *, _timeout: float | None = None, **params: Any) -> Any:
        started = self.clock()
        try:
            result = await super().call(method, _timeout=_timeout, **params)
        except Exception as exc:
            retry = getattr(exc, "retry_after", None)
            self.log.append((started, method, params.get("chat_id"), retry))
            raise
        self.log.append((started, method, params.get("chat_id"), None))
        return result


class EmulatedBot:
    def __init__(self, tg: Emulator, bot_id: int, router: Router, store: Store,
                 api: BotAPI | None = None, **outbox_options: Any) -> None:
        self.tg = tg
        self.bot_id = bot_id
        self.router = router
        self.store = store
        self.api = api or BotAPI(Emulator.token_for(bot_id), tg.base_url)
        outbox_options.setdefault("rate_limits", False)
        self.outbox = Outbox(self.api, store, **outbox_options)
        self.offset: int | None = None
        self.username: str | None = None
        self.seconds = 0.0

    async def __aenter__(self) -> EmulatedBot:
        me = await self.api.call("getMe")
        self.username = me.get("username")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.api.shutdown()

    async def drain(self, max_batches: int = 500) -> int:
        """Handle every pending update; returns how many."""
        handled = 0
        started = time.perf_counter()
        for _ in range(max_batches):
            batch = await self.api.call("getUpdates", offset=self.offset, timeout=0, limit=100)
            if not batch:
                self.seconds += time.perf_counter() - started
                return handled
            self.offset = batch[-1]["update_id"] + 1
            chats: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for update in batch:
                chats[U.order_key(update)].append(update)
            await asyncio.gather(*(self._chat(updates) for updates in chats.values()))
            handled += len(batch)
        raise AssertionError(f"updates still pending after {max_batches} batches")

    async def _chat(self, updates: list[dict[str, Any]]) -> None:
        for update in updates:
            ctx = Context(update, bot_id=self.bot_id, outbox=self.outbox, store=self.store,
                          bot_username=self.username)
            try:
                await self.router(ctx)
            finally:
                await ctx.finish()

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        return [m for m in self.tg.messages(chat_id, self.bot_id) if m["from_bot"]]
