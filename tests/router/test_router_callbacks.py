"""Callback queries: answered exactly once (handler, timer, return, raise, retry); debounce."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from router_fakes import BOT_ID, FakeAPI, SteppingClock, dispatch, make_ctx, press

from antiloop import Router
from antiloop.context import Context
from antiloop.errors import BadRequest
from antiloop.outbox import Outbox
from antiloop.store.base import Store


def answers(api: FakeAPI) -> list[dict[str, Any]]:
    return api.named("answerCallbackQuery")


async def test_handler_answer_is_the_answer_and_a_second_is_a_no_op(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router()

    @r.callback("menu:{item}")
    async def menu(ctx: Context, item: str) -> None:
        await ctx.answer(f"opening {item}")
        assert await ctx.answer("again") is True  # logged no-op

    ctx = await dispatch(r, press("menu:invest"), outbox, store)
    assert answers(api) == [{"callback_query_id": ctx.callback_query_id, "text": "opening invest"}]


async def test_unanswered_handler_is_answered_silently_on_return(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router()

    @r.callback("menu:{item}")
    async def menu(ctx: Context, item: str) -> None:
        await ctx.edit_text(f"{item} menu")

    ctx = await dispatch(r, press("menu:invest"), outbox, store)
    assert [m for m, _ in api.calls] == ["editMessageText", "answerCallbackQuery"]
    assert answers(api) == [{"callback_query_id": ctx.callback_query_id}]


async def test_slow_handler_is_answered_after_answer_after_while_it_runs(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router(answer_after=5.0)
    answered = asyncio.Event()
    api.on_call = lambda m, p: answered.set() if m == "answerCallbackQuery" else None
    states: list[bool] = []

    @r.callback("slow", answer_after=0.02)  # the per-handler override wins over the router's 5 s
    async def slow(ctx: Context) -> None:
        await asyncio.wait_for(answered.wait(), timeout=5)  # the timer answers while we run
        states.append(ctx.answered)
        await ctx.answer("too late: a no-op")
        await ctx.reply("done")

    await dispatch(r, press("slow"), outbox, store)
    assert states == [True]
    assert [m for m, _ in api.calls] == ["answerCallbackQuery", "sendMessage"]
    assert "text" not in answers(api)[0]


async def test_fast_handler_is_not_answered_by_the_timer(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router(answer_after=0.01)

    @r.callback("fast")
    async def fast(ctx: Context) -> None:
        await ctx.answer("saved")

    await dispatch(r, press("fast"), outbox, store)
    await asyncio.sleep(0.05)  # a leftover timer would fire now
    assert answers(api) == [{"callback_query_id": answers(api)[0]["callback_query_id"], "text": "saved"}]


async def test_answer_after_zero_answers_before_the_handler(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router()
    seen: list[bool] = []

    @r.callback("now", answer_after=0)
    async def now(ctx: Context) -> None:
        seen.append(ctx.answered)

    await dispatch(r, press("now"), outbox, store)
    assert seen == [True] and len(answers(api)) == 1


async def test_raising_handler_is_answered_once_and_its_retry_neither_answers_nor_resends(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router(answer_after=0.01)
    runs: list[int] = []
    timer_fired = asyncio.Event()
    api.on_call = lambda m, p: timer_fired.set() if m == "answerCallbackQuery" else None

    @r.callback("pay:{n:int}")
    async def pay(ctx: Context, n: int) -> None:
        runs.append(ctx.attempt)
        await ctx.edit_text("paying")  # ordinal 1
        if ctx.attempt == 1:
            await asyncio.wait_for(timer_fired.wait(), 5)  # the timer answers mid-handler
        await ctx.reply(f"paid {n}")  # ordinal 2, whenever the answer happened
        if ctx.attempt == 1:
            raise RuntimeError("db down")

    update = press("pay:5")
    with pytest.raises(RuntimeError):
        await dispatch(r, update, outbox, store)
    assert [m for m, _ in api.calls] == ["editMessageText", "answerCallbackQuery", "sendMessage"]
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    await dispatch(r, update, outbox, store, replayed=replayed, attempt=2)  # retry: not debounced
    assert runs == [1, 2]
    assert [m for m, _ in api.calls] == ["editMessageText", "answerCallbackQuery", "sendMessage"]


async def test_handler_that_raises_before_answering_is_answered_before_the_retry(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router()

    @r.callback("boom")
    async def boom(ctx: Context) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("boom")
        await ctx.answer("ok now")  # the retry's own answer: a no-op, already answered

    update = press("boom")
    with pytest.raises(RuntimeError):
        await dispatch(r, update, outbox, store)
    assert len(answers(api)) == 1
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    ctx = await dispatch(r, update, outbox, store, replayed=replayed, attempt=2)
    assert ctx.answered and len(answers(api)) == 1


async def test_handler_killed_mid_run_runs_again_on_the_rerun_and_is_not_debounced(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router()
    started = asyncio.Event()
    runs: list[int] = []

    @r.callback("menu:{item}")
    async def menu(ctx: Context, item: str) -> None:
        runs.append(ctx.attempt)
        await ctx.edit_text(item)
        started.set()
        if ctx.attempt == 1:
            await asyncio.Event().wait()  # never returns: the process dies here

    update = press("menu:invest")
    dying = make_ctx(update, outbox, store)
    first = asyncio.create_task(r(dying))
    await asyncio.wait_for(started.wait(), 5)
    first.cancel()  # the attempt dies mid-handler (the router still answers on the way out)
    await asyncio.wait([first])
    await outbox.settle(dying)  # its records reach the store (a SIGKILL here is the window)
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    await dispatch(r, update, outbox, store, replayed=replayed, attempt=2)  # inside the window
    assert runs == [1, 2]
    assert [m for m, _ in api.calls].count("editMessageText") == 1  # replayed, not re-sent
    assert len(answers(api)) == 1


async def test_too_old_query_is_logged_not_raised(api: FakeAPI, outbox: Outbox, store: Store) -> None:
    r = Router()
    api.fail("answerCallbackQuery", BadRequest(
        "query is too old and response timeout expired or query ID is invalid",
        error_code=400, method="answerCallbackQuery"))
    ran: list[str] = []

    @r.callback("x")
    async def x(ctx: Context) -> None:
        assert await ctx.answer("hi") is False
        ran.append("x")

    await dispatch(r, press("x"), outbox, store)
    assert ran == ["x"] and len(answers(api)) == 1


# -- debounce ----------------------------------------------------------------------------------
async def test_rapid_presses_run_once_and_every_press_is_answered_once(
    api: FakeAPI, outbox: Outbox, store: Store, clock: SteppingClock
) -> None:
    r = Router()
    runs: list[str] = []

    @r.callback("menu:{item}")
    async def menu(ctx: Context, item: str) -> None:
        runs.append(item)
        await ctx.answer(item)

    ids = []
    for _ in range(5):
        ctx = await dispatch(r, press("menu:invest", message_id=9), outbox, store)
        ids.append(ctx.callback_query_id)
        clock.advance(0.1)
    assert runs == ["invest"]
    assert [a["callback_query_id"] for a in answers(api)] == ids
    assert [a.get("text") for a in answers(api)] == ["invest", None, None, None, None]
    assert (await store.suppressed(BOT_ID)).get("debounced") == 4
    clock.advance(1.0)  # past the 1 s window: a new press runs
    await dispatch(r, press("menu:invest", message_id=9), outbox, store)
    assert runs == ["invest", "invest"]


async def test_debounce_never_crosses_users_messages_or_data(
    outbox: Outbox, store: Store
) -> None:
    r = Router()
    runs: list[tuple[int | None, int | None, str | None]] = []

    @r.callback("menu:{item}")
    async def menu(ctx: Context, item: str) -> None:
        runs.append((ctx.user_id, ctx.message_id, ctx.data))

    presses = [press("menu:invest", user=1, message_id=9), press("menu:invest", user=2, message_id=9),
               press("menu:invest", user=1, message_id=10), press("menu:explore", user=1, message_id=9)]
    for u in presses:
        await dispatch(r, u, outbox, store)
    assert runs == [(1, 9, "menu:invest"), (2, 9, "menu:invest"), (1, 10, "menu:invest"),
                    (1, 9, "menu:explore")]


async def test_navigation_at_human_speed_is_never_suppressed(
    outbox: Outbox, store: Store, clock: SteppingClock
) -> None:
    r = Router()
    runs: list[str] = []

    @r.callback("menu:{item}")
    async def menu(ctx: Context, item: str) -> None:
        runs.append(item)
        await ctx.edit_text(f"{item} menu")

    path = ["invest", "main", "invest", "main", "explore", "main", "explore", "main"]
    for item in path:
        await dispatch(r, press(f"menu:{item}", message_id=9), outbox, store)
        clock.advance(1.2)  # a person reading the menu before the next press
    assert runs == path
    assert "debounced" not in await store.suppressed(BOT_ID)


async def test_debounce_zero_and_per_handler_override(outbox: Outbox, store: Store) -> None:
    r = Router(debounce=0)
    runs: list[str] = []

    @r.callback("free")
    async def free(ctx: Context) -> None:
        runs.append("free")

    @r.callback("guarded", debounce=30.0)
    async def guarded(ctx: Context) -> None:
        runs.append("guarded")

    for _ in range(3):
        await dispatch(r, press("free"), outbox, store)
        await dispatch(r, press("guarded"), outbox, store)
    assert runs == ["free", "guarded", "free", "free"]


async def test_included_router_inherits_parent_options(outbox: Outbox, store: Store) -> None:
    root, mod = Router(debounce=0), Router()
    runs: list[str] = []

    @mod.callback("x")
    async def x(ctx: Context) -> None:
        runs.append("x")

    root.include(mod)
    for _ in range(3):
        await dispatch(root, press("x"), outbox, store)
    assert runs == ["x", "x", "x"]


async def test_debounced_press_while_first_still_runs_is_answered_at_once(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router()
    release = asyncio.Event()
    started = asyncio.Event()

    @r.callback("slow")
    async def slow(ctx: Context) -> None:
        started.set()
        await asyncio.wait_for(release.wait(), 5)

    first = asyncio.create_task(dispatch(r, press("slow"), outbox, store))
    await asyncio.wait_for(started.wait(), 5)
    second = await dispatch(r, press("slow"), outbox, store)
    assert answers(api) == [{"callback_query_id": second.callback_query_id}]  # at once, no text
    release.set()
    ctx = await first
    assert [a["callback_query_id"] for a in answers(api)] == [second.callback_query_id,
                                                               ctx.callback_query_id]


async def test_make_ctx_answered_flag_comes_from_the_ledger(outbox: Outbox, store: Store) -> None:
    update = press("x")
    fresh = make_ctx(update, outbox, store)
    assert not fresh.answered
    await fresh.answer()
    await outbox.settle(fresh)
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    assert make_ctx(update, outbox, store, replayed=replayed).answered
