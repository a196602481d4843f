"""The outbox: repeated replies, replay, rate limits on virtual time, 429 pauses."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from router_fakes import BOT_ID, FakeAPI, SteppingClock, VirtualTime, make_ctx, message, press

from antiloop.errors import BadRequest, RetryAfter, ServerError, TimedOut
from antiloop.outbox import Outbox
from antiloop.ratelimit import RateLimits, is_limited
from antiloop.store.base import Store
from antiloop.store.memory import MemoryStore


def flood(retry_after: float, method: str = "sendMessage") -> RetryAfter:
    return RetryAfter(f"Too Many Requests: retry after {retry_after:g}", error_code=429,
                      method=method, parameters={"retry_after": retry_after})


# -- repeated replies ----------------------------------------------------------------------------
async def test_same_text_to_same_chat_within_window_is_sent_once(
    api: FakeAPI, outbox: Outbox, store: Store, clock: SteppingClock
) -> None:
    first = await make_ctx(message("/start", user=1), outbox, store).reply("Main menu")
    clock.advance(1.0)
    again = await make_ctx(message("/start", user=1), outbox, store).reply("Main menu")
    assert again == first  # the earlier result, from this process
    forced = await make_ctx(message("/start", user=1), outbox, store).reply(
        "Main menu", allow_repeat=True)
    other_chat = await make_ctx(message("/start", user=2), outbox, store).reply("Main menu")
    clock.advance(2.5)  # 3.5 s after the first: the window is over
    later = await make_ctx(message("/start", user=1), outbox, store).reply("Main menu")
    assert [p["chat_id"] for p in api.named("sendMessage")] == [1, 1, 2, 1]
    assert forced != first and other_chat != first and later != first
    assert (await store.suppressed(BOT_ID))["repeat_reply"] == 1


async def test_edits_and_other_texts_are_not_repeat_guarded(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    for _ in range(2):
        ctx = make_ctx(press("menu:main", user=1, message_id=4), outbox, store)
        await ctx.edit_text("Main menu")
    await make_ctx(message("a", user=1), outbox, store).reply("one")
    await make_ctx(message("b", user=1), outbox, store).reply("two")
    assert len(api.named("editMessageText")) == 2 and len(api.named("sendMessage")) == 2


async def test_repeat_unknown_to_this_process_returns_none(api: FakeAPI, store: Store) -> None:
    a = Outbox(api, store, rate_limits=False)
    b = Outbox(api, store, rate_limits=False)  # another process sharing the store
    await make_ctx(message("x", user=1), a, store).reply("hello")
    assert await make_ctx(message("x", user=1), b, store).reply("hello") is None
    assert len(api.named("sendMessage")) == 1


async def test_a_suppressed_repeat_stays_suppressed_when_the_update_is_replayed(
    api: FakeAPI, outbox: Outbox, store: Store, clock: SteppingClock
) -> None:
    await make_ctx(message("x", user=1), outbox, store).reply("hello")
    update = message("y", user=1)
    await make_ctx(update, outbox, store).reply("hello")  # suppressed, and recorded as such
    clock.advance(10)
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    await make_ctx(update, outbox, store, replayed=replayed, attempt=2).reply("hello")
    assert len(api.named("sendMessage")) == 1


async def test_a_rerun_after_the_process_died_is_not_held_back_by_its_own_window(
    api: FakeAPI, store: Store
) -> None:
    """Attempt 1 took the window and died before Telegram had the send; another process
    re-runs the update inside the window: it sends. Never a lost reply (DESIGN 4)."""
    dying = Outbox(HangingAPI(), store, rate_limits=False)
    update = message("x", user=1)
    first = asyncio.create_task(make_ctx(update, dying, store).reply("hello"))
    await asyncio.sleep(0.01)
    first.cancel()  # the process is gone with its request
    await asyncio.wait([first])
    heir = Outbox(api, store, rate_limits=False)
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    assert await make_ctx(update, heir, store, replayed=replayed, attempt=2).reply("hello")
    assert len(api.named("sendMessage")) == 1
    assert "repeat_reply" not in await store.suppressed(BOT_ID)
    # ...and the re-run's send holds the window for the others
    assert await make_ctx(message("y", user=1), heir, store).reply("hello") is not None
    assert len(api.named("sendMessage")) == 1


@pytest.mark.parametrize("error", [
    TimedOut("no answer", method="sendMessage"),
    ServerError("Internal Server Error", error_code=500, method="sendMessage"),
    BadRequest("chat not found", error_code=400, method="sendMessage"),
])
async def test_a_failed_send_is_sent_by_the_rerun_inside_the_window(
    api: FakeAPI, outbox: Outbox, store: Store, error: Exception
) -> None:
    """Whether or not Telegram performed it, the re-run sends: at worst one duplicate (a
    timeout or 5xx after Telegram had it), never a lost reply."""
    api.fail("sendMessage", error)
    update = message("x", user=1)
    with pytest.raises(type(error)):
        await make_ctx(update, outbox, store).reply("hello")
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    assert await make_ctx(update, outbox, store, replayed=replayed, attempt=2).reply("hello")
    assert len(api.named("sendMessage")) == 2
    assert "repeat_reply" not in await store.suppressed(BOT_ID)


class HangingAPI(FakeAPI):
    async def call(self, method: str, **params: Any) -> Any:
        await asyncio.Event().wait()


class FlakyLedger(MemoryStore):
    """A real MemoryStore whose next ``record_send`` calls fail (a full disk, say)."""

    def __init__(self, clock: SteppingClock) -> None:
        super().__init__(clock=clock)
        self.broken = 0

    async def record_send(self, *a: Any) -> None:
        if self.broken:
            self.broken -= 1
            raise OSError("disk full")
        await super().record_send(*a)


async def test_a_send_the_ledger_missed_is_not_sent_again_by_a_rerun_here(
    api: FakeAPI, clock: SteppingClock
) -> None:
    store = FlakyLedger(clock)
    outbox = Outbox(api, store, rate_limits=False)
    update = message("x", user=1)
    ctx = make_ctx(update, outbox, store)
    first = await ctx.reply("one")
    await outbox.settle(ctx)  # "one" is in the ledger
    store.broken = 2
    await ctx.reply("two")  # Telegram has it; the ledger does not (recorded behind)
    with pytest.raises(OSError):
        await outbox.settle(ctx)  # the record's failure surfaces before the update completes
    clock.advance(60)  # long after the repeat window
    rerun = make_ctx(update, outbox, store,
                     replayed=await store.sends_for(BOT_ID, update["update_id"]), attempt=2)
    assert await rerun.reply("one") == first
    with pytest.raises(OSError):
        await rerun.reply("two")  # the ledger is still broken: not sent, not forgotten
    rerun = make_ctx(update, outbox, store,
                     replayed=await store.sends_for(BOT_ID, update["update_id"]), attempt=3)
    await rerun.reply("one")
    await rerun.reply("two")  # recorded now, not sent
    await rerun.reply("three")
    await outbox.settle(rerun)
    assert [p["text"] for p in api.named("sendMessage")] == ["one", "two", "three"]
    assert sorted(await store.sends_for(BOT_ID, update["update_id"])) == [1, 2, 3]


async def test_replayed_calls_are_skipped_with_their_results(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    update = message("x", user=1)
    ctx = make_ctx(update, outbox, store)
    one = await ctx.reply("one")
    await ctx.reply("two")
    await outbox.settle(ctx)  # what the worker does before completing the update
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    again = make_ctx(update, outbox, store, replayed=replayed, attempt=2)
    assert await again.reply("one") == one
    await again.reply("two")
    await again.reply("three")
    assert [p["text"] for p in api.named("sendMessage")] == ["one", "two", "three"]


async def test_calls_outside_an_update_are_repeat_guarded_too(api: FakeAPI, outbox: Outbox) -> None:
    await outbox.call(None, "sendMessage", {"chat_id": 3, "text": "broadcast"})
    await outbox.call(None, "sendMessage", {"chat_id": 3, "text": "broadcast"})
    await outbox.call(None, "sendMessage", {"chat_id": 3, "text": "broadcast"}, True)
    assert len(api.named("sendMessage")) == 2


# -- rate limits (virtual time) ------------------------------------------------------------------
def limited(vt: VirtualTime, limits: RateLimits | bool = True) -> tuple[FakeAPI, Outbox]:
    api = FakeAPI(clock=vt)
    return api, Outbox(api, MemoryStore(), rate_limits=limits, reply_window=0, clock=vt,
                       sleep=vt.sleep)


def send(outbox: Outbox, chat: int, text: str = "m", method: str = "sendMessage") -> Any:
    return outbox.call(None, method, {"chat_id": chat, "text": text})


def times_for(api: FakeAPI, chat: int, start: float) -> list[float]:
    return [round(t - start, 3) for (m, p), t in zip(api.calls, api.times, strict=True)
            if p.get("chat_id") == chat]


async def test_per_chat_bucket_burst_then_one_per_second_other_chats_flow() -> None:
    vt = VirtualTime()
    api, outbox = limited(vt)
    t0 = vt.now
    await vt.run(*[send(outbox, 1, f"m{i}") for i in range(6)], send(outbox, 2),
                 outbox.call(None, "answerCallbackQuery", {"callback_query_id": "q"}),
                 outbox.call(None, "getMe", {}))
    assert times_for(api, 1, t0) == [0, 0, 0, 1, 2, 3]
    assert times_for(api, 2, t0) == [0]
    assert [t - t0 for (m, _), t in zip(api.calls, api.times, strict=True)
            if m in ("answerCallbackQuery", "getMe")] == [0, 0]


async def test_group_bucket_twenty_per_minute() -> None:
    vt = VirtualTime()
    api, outbox = limited(vt)
    t0 = vt.now
    await vt.run(*[send(outbox, -100, f"m{i}") for i in range(6)])
    assert times_for(api, -100, t0) == [0, 0, 0, 3, 6, 9]


async def test_global_bucket_thirty_per_second() -> None:
    vt = VirtualTime()
    api, outbox = limited(vt)
    t0 = vt.now
    await vt.run(*[send(outbox, chat) for chat in range(1, 61)])
    at = sorted(t - t0 for t in api.times)
    assert at[:30] == [0] * 30
    assert at[30:] == pytest.approx([i / 30 for i in range(1, 31)])


async def test_custom_limits_and_unlimited_methods() -> None:
    vt = VirtualTime()
    api, outbox = limited(vt, RateLimits(per_chat=2.0, per_chat_burst=1))
    t0 = vt.now
    await vt.run(*[send(outbox, 1, f"m{i}") for i in range(3)],
                 *[outbox.call(None, "sendChatAction", {"chat_id": 1, "action": "typing"})
                   for _ in range(3)])
    assert [t - t0 for (m, _), t in zip(api.calls, api.times, strict=True)
            if m == "sendMessage"] == [0, 0.5, 1.0]
    assert [t - t0 for (m, _), t in zip(api.calls, api.times, strict=True)
            if m == "sendChatAction"] == [0, 0, 0]
    assert all(is_limited(m) for m in ["sendPhoto", "copyMessage", "forwardMessages",
                                       "editMessageReplyMarkup"])
    assert not any(is_limited(m) for m in ["answerCallbackQuery", "getMe", "deleteMessage"])


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    async def record_send(self, *a: Any) -> None:
        self.ops["record_send"] += 1
        await super().record_send(*a)

    async def hit_window(self, *a: Any) -> bool:
        self.ops["hit_window"] += 1
        return await super().hit_window(*a)

    async def count_suppressed(self, *a: Any) -> None:
        self.ops["count_suppressed"] += 1
        await super().count_suppressed(*a)


async def test_rate_limits_off_means_no_waiting_and_one_store_write_per_call() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    store = CountingStore()
    api = FakeAPI()
    outbox = Outbox(api, store, rate_limits=False, reply_window=0, sleep=sleep)
    ctx = make_ctx(message("x", user=1), outbox, store)
    for i in range(100):
        await ctx.reply(f"m{i}")
    await outbox.settle(ctx)
    assert slept == [] and len(api.calls) == 100
    assert store.ops == Counter({"record_send": 100})


# -- 429 -------------------------------------------------------------------------------------------
async def test_429_pauses_exactly_that_chat_then_retries() -> None:
    vt = VirtualTime()
    api, outbox = limited(vt, False)
    api.fail("sendMessage", flood(5))
    t0 = vt.now

    async def later(delay: float, chat: int, text: str) -> Any:
        await vt.sleep(delay)
        return await send(outbox, chat, text)

    await vt.run(send(outbox, 1, "first"), later(1, 1, "during"), later(2, 2, "elsewhere"),
                 later(3, 1, "during2"))
    calls = [(p["chat_id"], p["text"], t - t0) for (_, p), t in zip(api.calls, api.times, strict=True)]
    assert calls == [(1, "first", 0), (2, "elsewhere", 2), (1, "first", 5), (1, "during", 5),
                     (1, "during2", 5)]


async def test_429_without_a_chat_pauses_everything() -> None:
    vt = VirtualTime()
    api, outbox = limited(vt, False)
    api.fail("setMyCommands", flood(4, "setMyCommands"))
    t0 = vt.now

    async def later(delay: float, chat: int) -> Any:
        await vt.sleep(delay)
        return await send(outbox, chat)

    await vt.run(outbox.call(None, "setMyCommands", {"commands": []}), later(1, 7), later(2, 8))
    assert [(m, t - t0) for (m, _), t in zip(api.calls, api.times, strict=True)] == [
        ("setMyCommands", 0), ("setMyCommands", 4), ("sendMessage", 4), ("sendMessage", 4)]


async def test_429_retries_are_bounded() -> None:
    vt = VirtualTime()
    api = FakeAPI(clock=vt)
    outbox = Outbox(api, MemoryStore(), rate_limits=False, reply_window=0, clock=vt,
                    sleep=vt.sleep, max_429_retries=2)
    api.fail("sendMessage", *[flood(1) for _ in range(5)])
    with pytest.raises(RetryAfter):
        await vt.run(send(outbox, 1))
    assert len(api.calls) == 3
    assert outbox.flow.paused_until(1) > 0  # the last 429 still holds the chat back
