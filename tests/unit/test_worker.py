"""The worker: order per chat, concurrency across chats, retries, dead letters, replay safety."""

from __future__ import annotations

import asyncio
from typing import Any

from antiloop._util import Identity
from antiloop.context import Context
from antiloop.outbox import Outbox
from antiloop.store import MemoryStore
from antiloop.worker import Worker

BOT = 9
ME = Identity("me", 1, "h")


class RecordingAPI:
    bot_id = BOT

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, method: str, **params: Any) -> Any:
        self.calls.append((method, params))
        return {"message_id": len(self.calls), "method": method}


def msg(uid: int, chat: int) -> dict[str, Any]:
    return {"update_id": uid, "message": {"message_id": uid, "date": 0, "text": f"t{uid}",
                                          "chat": {"id": chat, "type": "private"},
                                          "from": {"id": chat, "is_bot": False, "first_name": "u"}}}


async def _run(worker: Worker, store: MemoryStore, updates: list[dict[str, Any]]) -> None:
    worker.start()
    worker.submit(await store.add_batch(BOT, updates, ME, 60))
    await asyncio.wait_for(worker.wait_idle(), 10)
    await worker.stop(1)


async def test_one_chat_in_order_never_concurrently_many_chats_at_once() -> None:
    store = MemoryStore()
    active: dict[int, int] = {}
    max_chats = 0
    seen: dict[int, list[int]] = {}

    async def handler(ctx: Context) -> None:
        nonlocal max_chats
        assert ctx.chat_id is not None
        active[ctx.chat_id] = active.get(ctx.chat_id, 0) + 1
        assert active[ctx.chat_id] == 1, "two updates of one chat ran at once"
        max_chats = max(max_chats, sum(1 for v in active.values() if v))
        await asyncio.sleep(0.005)
        seen.setdefault(ctx.chat_id, []).append(ctx.update_id)
        active[ctx.chat_id] -= 1

    worker = Worker(handler, store, Outbox(RecordingAPI(), store), ME, BOT, concurrency=4)
    updates = [msg(i, chat=i % 6) for i in range(1, 61)]
    await _run(worker, store, updates)
    for chat, ids in seen.items():
        assert ids == sorted(ids) and len(ids) == 10, chat
    assert 1 < max_chats <= 4
    assert (await store.counts(BOT))["done"] == 60


async def test_failing_handler_is_retried_then_parked_while_the_rest_flows() -> None:
    store = MemoryStore()
    runs: dict[int, int] = {}

    async def handler(ctx: Context) -> None:
        runs[ctx.update_id] = runs.get(ctx.update_id, 0) + 1
        if ctx.update_id == 2:
            raise RuntimeError("always broken")

    worker = Worker(handler, store, Outbox(RecordingAPI(), store), ME, BOT, max_attempts=3,
                    backoff_base=0.001)
    await _run(worker, store, [msg(1, 1), msg(2, 2), msg(3, 2), msg(4, 3)])
    assert runs == {1: 1, 2: 3, 3: 1, 4: 1}
    dead = await store.dead_letters(BOT)
    assert [(d.update_id, d.attempts) for d in dead] == [(2, 3)]
    assert "RuntimeError: always broken" in dead[0].error
    assert (await store.counts(BOT)) == {"pending": 0, "in_flight": 0, "done": 3, "dead": 1}


async def test_a_retry_skips_the_sends_already_made() -> None:
    store = MemoryStore()
    api = RecordingAPI()
    attempts = 0

    async def handler(ctx: Context) -> None:
        nonlocal attempts
        attempts += 1
        first = await ctx.reply("one")
        await ctx.reply("two")
        if attempts == 1:
            raise ConnectionError("crashed after two sends")
        assert first["message_id"] == 1  # the recorded result is handed back
        await ctx.reply("three")

    worker = Worker(handler, store, Outbox(api, store), ME, BOT, backoff_base=0.001)
    await _run(worker, store, [msg(1, 5)])
    assert [p["text"] for _, p in api.calls] == ["one", "two", "three"]
    assert attempts == 2


async def test_callback_left_unanswered_is_answered_once_even_when_the_handler_fails() -> None:
    store = MemoryStore()
    api = RecordingAPI()
    tries = 0

    async def handler(ctx: Context) -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ValueError("first try fails")

    cq = {"update_id": 1, "callback_query": {
        "id": "cq1", "data": "x", "chat_instance": "1",
        "from": {"id": 5, "is_bot": False, "first_name": "u"},
        "message": {"message_id": 3, "date": 0, "chat": {"id": 5, "type": "private"}}}}
    worker = Worker(handler, store, Outbox(api, store), ME, BOT, backoff_base=0.001)
    await _run(worker, store, [cq])
    answers = [p for m, p in api.calls if m == "answerCallbackQuery"]
    assert answers == [{"callback_query_id": "cq1"}]
    assert tries == 2


async def test_stop_returns_unfinished_work_for_release() -> None:
    store = MemoryStore()
    gate = asyncio.Event()

    async def handler(ctx: Context) -> None:
        await gate.wait()

    worker = Worker(handler, store, Outbox(RecordingAPI(), store), ME, BOT, concurrency=1)
    worker.start()
    worker.submit(await store.add_batch(BOT, [msg(1, 1), msg(2, 1), msg(3, 2)], ME, 60))
    await asyncio.sleep(0.01)
    left = await worker.stop(drain_timeout=0.05)
    assert sorted(left) == [1, 2, 3]


def test_parsed_update_agrees_with_the_single_readers() -> None:
    from antiloop import updates as U

    samples = [
        msg(1, 5),
        {"update_id": 2, "edited_message": {"message_id": 3, "date": 0, "caption": "c",
                                            "chat": {"id": -7, "type": "group"},
                                            "from": {"id": 8, "is_bot": True}}},
        {"update_id": 3, "callback_query": {"id": "q", "data": "menu:x", "chat_instance": "1",
                                            "from": {"id": 5, "is_bot": False},
                                            "message": {"message_id": 9, "date": 0,
                                                        "chat": {"id": 5, "type": "private"}}}},
        {"update_id": 4, "callback_query": {"id": "q2", "inline_message_id": "im", "data": "d",
                                            "chat_instance": "1", "from": {"id": 6}}},
        {"update_id": 5, "inline_query": {"id": "i", "query": "hello", "offset": "",
                                          "from": {"id": 11}}},
        {"update_id": 6, "my_chat_member": {"chat": {"id": -100}, "from": {"id": 12}}},
        {"update_id": 7, "message": "not a dict"},
    ]
    for u in samples:
        p = U.Parsed(u)
        assert (p.kind, p.chat_id, p.user_id, p.text, p.data) == (
            U.update_type(u), U.chat_id(u), U.user_id(u), U.text(u), U.callback_data(u)), u
        assert p.message == U.message_of(u)
