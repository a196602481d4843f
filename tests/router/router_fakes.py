"""Small fakes for the router/outbox unit tests: a recording Bot API, updates, virtual time.

The fake API stands in for Telegram only (the unit under test is antiloop's policy code); the
integration tests use the real emulator over HTTP.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from antiloop.context import Context
from antiloop.outbox import Outbox
from antiloop.store.base import Store


class SteppingClock(Protocol):
    """The ``clock`` fixture of tests/conftest.py."""

    now: float

    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


BOT_ID = 777
BOT_USERNAME = "menu_bot"


class FakeAPI:
    """Records every call; ``fail(method, exc)`` queues an exception for the next such call."""

    def __init__(self, bot_id: int = BOT_ID, clock: Callable[[], float] | None = None) -> None:
        self.bot_id = bot_id
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []
        self._clock = clock
        self._errors: dict[str, list[BaseException]] = {}
        self._ids = itertools.count(1000)
        self.on_call: Callable[[str, dict[str, Any]], None] | None = None

    def fail(self, method: str, *errors: BaseException) -> None:
        self._errors.setdefault(method, []).extend(errors)

    async def call(self, method: str, **params: Any) -> Any:
        self.calls.append((method, params))
        self.times.append(self._clock() if self._clock else 0.0)
        if self.on_call is not None:
            self.on_call(method, params)
        queued = self._errors.get(method)
        if queued:
            raise queued.pop(0)
        if method.startswith(("send", "copy", "forward")):
            return {"message_id": next(self._ids), "chat": {"id": params.get("chat_id")},
                    "text": params.get("text")}
        if method.startswith("edit"):
            return {"message_id": params.get("message_id"), "text": params.get("text")}
        if method == "getMe":
            return {"id": self.bot_id, "is_bot": True, "username": BOT_USERNAME}
        return True

    def named(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in self.calls if m == method]


_uids = itertools.count(1)


def message(text: str | None, *, user: int = 10, chat: int | None = None, is_bot: bool = False,
            chat_type: str | None = None, edited: bool = False, **extra: Any) -> dict[str, Any]:
    chat_id = user if chat is None else chat
    kind = chat_type or ("private" if chat_id > 0 else "supergroup")
    body: dict[str, Any] = {
        "message_id": next(_uids), "date": 0,
        "from": {"id": user, "is_bot": is_bot, "first_name": f"u{user}"},
        "chat": {"id": chat_id, "type": kind}, **extra,
    }
    if text is not None:
        body["text"] = text
    return {"update_id": next(_uids), "edited_message" if edited else "message": body}


def press(data: str, *, user: int = 10, message_id: int = 5, chat: int | None = None) -> dict[str, Any]:
    chat_id = user if chat is None else chat
    return {"update_id": next(_uids), "callback_query": {
        "id": f"cq{next(_uids)}", "from": {"id": user, "is_bot": False, "first_name": "u"},
        "chat_instance": "ci", "data": data,
        "message": {"message_id": message_id, "date": 0, "chat": {"id": chat_id, "type": "private"},
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "bot"}, "text": "menu"},
    }}


def make_ctx(update: dict[str, Any], outbox: Outbox, store: Store, *,
             replayed: dict[int, Any] | None = None, attempt: int = 1,
             username: str | None = BOT_USERNAME) -> Context:
    return Context(update, bot_id=BOT_ID, outbox=outbox, store=store, attempt=attempt,
                   bot_username=username, replayed=replayed)


async def dispatch(handler: Callable[[Context], Awaitable[None]], update: dict[str, Any],
                   outbox: Outbox, store: Store, **kw: Any) -> Context:
    """What the worker does: build the Context, run the handler, then ``finish`` (always) and
    wait until every call is recorded (``settle``)."""
    ctx = make_ctx(update, outbox, store, **kw)
    try:
        await handler(ctx)
    finally:
        await ctx.finish()
        await outbox.settle(ctx)
    return ctx


class VirtualTime:
    """A clock and an async ``sleep`` on it: ``advance`` wakes sleepers in time order.

    ``run_until_idle`` lets every task progress, then jumps to the next wake-up; bounded.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._seq), fut))
        await fut

    async def _settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def run(self, *aws: Awaitable[Any], max_steps: int = 10_000) -> list[Any]:
        tasks = [asyncio.ensure_future(a) for a in aws]
        for _ in range(max_steps):
            await self._settle()
            if all(t.done() for t in tasks):
                return [t.result() for t in tasks]
            if not self._sleepers:
                continue
            when, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            if not fut.done():
                fut.set_result(None)
        for t in tasks:
            t.cancel()
        raise AssertionError("virtual time: tasks did not finish within the step bound")
