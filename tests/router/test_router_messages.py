"""Messages: opt-in fingerprints, messages from bots, and retries of guarded updates."""

from __future__ import annotations

from typing import Any

import pytest
from router_fakes import BOT_ID, FakeAPI, SteppingClock, dispatch, message

from antiloop import Router
from antiloop.context import Context
from antiloop.outbox import Outbox
from antiloop.store.base import Store


def echo_router(**options: Any) -> tuple[Router, list[str]]:
    r = Router()
    seen: list[str] = []

    @r.message(**options)
    async def echo(ctx: Context) -> None:
        seen.append(ctx.text or "")

    return r, seen


async def test_same_text_twice_is_handled_twice_by_default(outbox: Outbox, store: Store) -> None:
    r, seen = echo_router()
    for _ in range(2):
        await dispatch(r, message("yes"), outbox, store)
    assert seen == ["yes", "yes"]
    assert "fingerprint" not in await store.suppressed(BOT_ID)


async def test_dedupe_suppresses_the_same_normalised_text_of_one_user_in_one_chat(
    outbox: Outbox, store: Store, clock: SteppingClock
) -> None:
    r, seen = echo_router(dedupe=2.0)
    await dispatch(r, message("Buy  SOL now "), outbox, store)
    clock.advance(1.0)
    await dispatch(r, message("buy sol NOW"), outbox, store)  # same once normalised: suppressed
    await dispatch(r, message("buy sol now", user=11), outbox, store)  # another user: handled
    await dispatch(r, message("buy sol now", chat=-5), outbox, store)  # another chat: handled
    await dispatch(r, message("something else"), outbox, store)  # no chat-wide lock
    clock.advance(1.5)  # the window is over
    await dispatch(r, message("buy sol now"), outbox, store)
    assert seen == ["Buy  SOL now ", "buy sol now", "buy sol now", "something else", "buy sol now"]
    assert (await store.suppressed(BOT_ID))["fingerprint"] == 1


async def test_dedupe_is_per_handler(outbox: Outbox, store: Store) -> None:
    r = Router()
    seen: list[str] = []

    @r.command("start")
    async def start(ctx: Context) -> None:
        seen.append("start")

    @r.message(dedupe=5.0)
    async def echo(ctx: Context) -> None:
        seen.append(ctx.text or "")

    for text in ["/start", "/start", "hey", "hey"]:
        await dispatch(r, message(text), outbox, store)
    assert seen == ["start", "start", "hey"]


async def test_a_failed_fingerprinted_update_is_retried_not_suppressed_by_itself(
    outbox: Outbox, store: Store
) -> None:
    r = Router()
    runs: list[int] = []

    @r.message(dedupe=60.0)
    async def flaky(ctx: Context) -> None:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("flaky")

    update = message("hello")
    with pytest.raises(RuntimeError):
        await dispatch(r, update, outbox, store)
    replayed = await store.sends_for(BOT_ID, update["update_id"])
    await dispatch(r, update, outbox, store, replayed=replayed, attempt=2)
    assert runs == [1, 2]
    await dispatch(r, message("hello"), outbox, store)  # a new update with the same text: suppressed
    assert runs == [1, 2]


async def test_messages_from_bots_are_not_handled_by_default(
    api: FakeAPI, outbox: Outbox, store: Store
) -> None:
    r = Router()
    seen: list[str] = []

    @r.command("start")
    async def start(ctx: Context) -> None:
        seen.append("start")

    @r.message()
    async def echo(ctx: Context) -> None:
        seen.append("echo")
        await ctx.reply(ctx.text or "")

    await dispatch(r, message("/start", user=55, is_bot=True, chat=-9), outbox, store)
    await dispatch(r, message("hello", user=55, is_bot=True, chat=-9), outbox, store)
    await dispatch(r, message("hello", user=56, chat=-9), outbox, store)
    assert seen == ["echo"]
    assert api.named("sendMessage") == [{"chat_id": -9, "text": "hello"}]
    assert (await store.suppressed(BOT_ID))["from_bot"] == 2


async def test_from_bots_true_opts_in(outbox: Outbox, store: Store) -> None:
    r = Router()
    seen: list[str] = []

    @r.message(from_bots=True)
    async def any_sender(ctx: Context) -> None:
        seen.append(str(ctx.user_id))

    await dispatch(r, message("ping", user=55, is_bot=True), outbox, store)
    assert seen == ["55"]
    assert "from_bot" not in await store.suppressed(BOT_ID)
