"""Integration: the Router and Outbox against the real Bot API emulator over HTTP, with real
stores (memory and SQLite, from tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from emulated_bot import EmulatedBot, RecordingAPI
from router_fakes import SteppingClock

from antiloop import Router
from antiloop.context import Context
from antiloop.store.base import Store
from antiloop.testing import Emulator, ManualClock

BOT = 4242
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "menu_bot.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("menu_bot_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop("menu_bot_example", None)
    spec.loader.exec_module(module)
    return module


def menu_message(bot: EmulatedBot, chat: int) -> dict[str, Any]:
    with_buttons = [m for m in bot.bot_messages(chat) if m.get("reply_markup")]
    assert len(with_buttons) == 1, with_buttons
    return with_buttons[0]


async def test_press_storm_runs_once_per_user_and_window_and_answers_every_press(
    store: Store, clock: SteppingClock, capsys: pytest.CaptureFixture[str]
) -> None:
    users, presses = 200, 10
    example = load_example()
    async with Emulator(rate_limits=False) as tg:
        api = RecordingAPI(Emulator.token_for(BOT), tg.base_url, time.monotonic)
        async with EmulatedBot(tg, BOT, example.router, store, api=api) as bot:
            for user in range(1, users + 1):
                await tg.send(BOT, user, "/start")
            await bot.drain()
            menus = {user: menu_message(bot, user)["message_id"] for user in range(1, users + 1)}
            figures = []
            for data in ("menu:invest", "menu:main"):  # into the Invest menu, then Back
                for user, mid in menus.items():
                    for _ in range(presses):
                        await tg.click(BOT, user, mid, data)
                t0 = time.perf_counter()
                assert await bot.drain() == users * presses
                figures.append(time.perf_counter() - t0)
                clock.advance(1.5)  # the next round is in a new debounce window
            stats = tg.stats(BOT)
    # one handler run = one editMessageText of that user's menu
    runs = [(chat, m) for _, m, chat, _ in api.log if m == "editMessageText"]
    assert sorted(runs) == sorted((u, "editMessageText") for u in menus for _ in range(2))
    cb = stats["callbacks"]
    assert cb["created"] == 2 * users * presses
    assert (cb["answered"], cb["unanswered"], cb["answered_twice"]) == (cb["created"], 0, 0)
    assert stats["calls"]["answerCallbackQuery"] == cb["created"]
    assert (await store.suppressed(BOT))["debounced"] == 2 * users * (presses - 1)
    for user in range(1, users + 1):
        shown = menu_message(bot, user)
        assert shown["text"] == "Main menu. What would you like to do?"
        assert shown["edits"] == 2
    with capsys.disabled():
        print(f"\n[press storm, {store.url.split(':')[0]}] {users} users x {presses} presses, "
              f"2 windows: {len(runs)} runs, {cb['answered']} answers, "
              f"{', '.join(f'{s:.2f} s' for s in figures)} per window "
              f"({users * presses / min(figures):,.0f} presses/s)")


async def test_menu_navigation_at_human_speed_is_never_suppressed(
    store: Store, clock: SteppingClock
) -> None:
    example = load_example()
    path = ["menu:invest", "invest:1000", "menu:invest", "menu:main", "menu:explore",
            "explore:pools", "menu:explore", "menu:main", "menu:account", "account:profile",
            "menu:account", "menu:main", "menu:invest", "menu:main"]
    async with Emulator(rate_limits=False) as tg, EmulatedBot(tg, BOT, example.router, store) as bot:
        await tg.send(BOT, 7, "/start")
        await bot.drain()
        mid = menu_message(bot, 7)["message_id"]
        texts = []
        for data in path:
            await tg.click(BOT, 7, mid, data)
            await bot.drain()
            texts.append(menu_message(bot, 7)["text"])
            clock.advance(1.1)  # a person, not a storm
        stats = tg.stats(BOT)
    assert texts[0].startswith("Invest:") and texts[1].startswith("Investing 1,000.00")
    assert texts[3] == texts[7] == texts[11] == texts[13] == "Main menu. What would you like to do?"
    assert texts[5].startswith("A liquidity pool") and "user 7" in texts[9]
    assert stats["messages_edited"] == len(path)
    assert stats["callbacks"]["unanswered"] == 0 and stats["callbacks"]["answered_twice"] == 0
    assert "debounced" not in await store.suppressed(BOT)


async def test_example_commands_and_unmatched_updates(store: Store) -> None:
    example = load_example()
    router = Router()
    router.include(example.router)
    async with Emulator(rate_limits=False) as tg, EmulatedBot(tg, BOT, router, store) as bot:
        await tg.send(BOT, 8, "/simulate 1000")
        await tg.send(BOT, 8, "/simulate lots")
        await tg.send(BOT, 8, f"/start@{bot.username}_not")  # addressed to another bot
        assert await bot.drain() == 3
        texts = [m["text"] for m in bot.bot_messages(8)]
    assert texts == [
        "Investing 1,000.00 for 365 days at 8% APR: about 80.00 return, 1,080.00 in total "
        "(simple interest; an illustration, not advice).",
        "Usage: /simulate AMOUNT [DAYS], e.g. /simulate 1000 or /simulate 500 90",
        f"You said: /start@{bot.username}_not\n{example.HELP}",
    ]


async def test_unmatched_update_completes_without_a_reply(store: Store) -> None:
    router = Router()

    @router.command("start")
    async def start(ctx: Context) -> None:
        await ctx.reply("hi", reply_markup={"inline_keyboard": [[
            {"text": "Old", "callback_data": "old:button"}]]})

    async with Emulator(rate_limits=False) as tg, EmulatedBot(tg, BOT, router, store) as bot:
        await tg.send(BOT, 9, "/start")
        await tg.send(BOT, 9, "just talking")
        await bot.drain()
        mid = menu_message(bot, 9)["message_id"]
        await tg.click(BOT, 9, mid, "old:button")  # a button no handler knows any more
        assert await bot.drain() == 1
        assert await bot.drain() == 0  # completed: nothing left, nothing retried
        stats = tg.stats(BOT)
    assert [m["text"] for m in bot.bot_messages(9)] == ["hi"]
    assert stats["callbacks"]["answered"] == 1 and stats["callbacks"]["answered_twice"] == 0


@pytest.mark.parametrize("dedupe", [0.0, 2.0])
async def test_text_sent_twice_with_dedupe_on_and_off(store: Store, dedupe: float) -> None:
    router = Router()
    runs: list[str] = []

    @router.message(dedupe=dedupe)
    async def echo(ctx: Context) -> None:
        runs.append(ctx.text or "")
        await ctx.reply(f"got {ctx.text}", allow_repeat=True)

    async with Emulator(rate_limits=False) as tg, EmulatedBot(tg, BOT, router, store) as bot:
        await tg.send(BOT, 5, "yes")
        await tg.send(BOT, 5, "Yes ")
        await tg.send(BOT, 6, "yes")  # another user: never suppressed
        await bot.drain()
        mine = [m["text"] for m in bot.bot_messages(5)]
    if dedupe:
        assert runs == ["yes", "yes"] and mine == ["got yes"]
        assert (await store.suppressed(BOT))["fingerprint"] == 1
    else:
        assert sorted(runs) == ["Yes ", "yes", "yes"] and mine == ["got yes", "got Yes "]


async def test_identical_reply_is_not_repeated_unless_allowed(store: Store) -> None:
    router = Router()

    @router.message()
    async def same(ctx: Context) -> None:
        await ctx.reply("Main menu")
        await ctx.reply("Main menu")  # a loop in the handler: stopped by the outbox
        await ctx.reply("tick", allow_repeat=True)

    async with Emulator(rate_limits=False) as tg, EmulatedBot(tg, BOT, router, store) as bot:
        await tg.send(BOT, 5, "a")
        await tg.send(BOT, 5, "b")
        await bot.drain()
        texts = [m["text"] for m in bot.bot_messages(5)]
    assert texts == ["Main menu", "tick", "tick"]
    assert (await store.suppressed(BOT))["repeat_reply"] == 3


@pytest.mark.parametrize("from_bots", [False, True])
async def test_two_bots_in_a_group_stop_answering_each_other(store: Store, from_bots: bool) -> None:
    """Bot A and bot B reply to every message in group -300. Whatever one bot sends is
    relayed to the other as a message from a bot (as Telegram would show it). Without the
    from_bots filter this loops until the relay's bound."""
    group, a_id, b_id, rounds = -300, 5001, 5002, 6

    def echo_router(name: str) -> Router:
        r = Router(name)

        @r.message(from_bots=from_bots)
        async def echo(ctx: Context) -> None:
            await ctx.reply(f"{name} heard: {ctx.text}"[:200])

        return r

    async with Emulator(rate_limits=False) as tg, \
            EmulatedBot(tg, a_id, echo_router("A"), store) as a, \
            EmulatedBot(tg, b_id, echo_router("B"), store) as b:
        await tg.send(a_id, 1, "hello bots", chat_id=group)
        await tg.send(b_id, 1, "hello bots", chat_id=group)
        relayed = {a_id: 0, b_id: 0}
        for _ in range(rounds):
            await a.drain()
            await b.drain()
            moved = 0
            for me, other in ((a, b), (b, a)):
                mine = me.bot_messages(group)
                for msg in mine[relayed[me.bot_id]:]:
                    await tg.send(other.bot_id, me.bot_id, msg["text"], chat_id=group, is_bot=True)
                    moved += 1
                relayed[me.bot_id] = len(mine)
            if not moved:
                break
        sent = len(a.bot_messages(group)) + len(b.bot_messages(group))
    if from_bots:
        assert sent >= rounds  # the loop the default prevents
    else:
        assert sent == 2  # each bot answered the person once, then the loop stopped
        assert (await store.suppressed(a_id))["from_bot"] == 1
        assert (await store.suppressed(b_id))["from_bot"] == 1


@pytest.mark.parametrize("proactive", [False, True])
async def test_429_storm_is_respected(store: Store, proactive: bool) -> None:
    """Emulator flood control on; one clock shared by the emulator and the outbox (waiting
    moves it), so no real sleeping. Every 429 pauses its chat: no call into that chat starts
    before ``retry_after`` has passed; the other chats keep their turns; everything arrives.
    With the proactive limits on, Telegram never has to say 429."""
    mc = ManualClock(start=1_700_000_000)

    async def sleep(seconds: float) -> None:
        mc.advance(seconds)

    router = Router()

    @router.message()
    async def chatty(ctx: Context) -> None:
        for i in range(4):
            await ctx.reply(f"{ctx.text} part {i}")

    async with Emulator(rate_limits=True, clock=mc) as tg:
        api = RecordingAPI(Emulator.token_for(BOT), tg.base_url, mc)
        async with EmulatedBot(tg, BOT, router, store, api=api, rate_limits=proactive,
                               clock=mc, sleep=sleep) as bot:
            for n in range(5):
                await tg.send(BOT, 1, f"g{n}", chat_id=-400)  # 20 messages into one group
                await tg.send(BOT, 10 + n, f"p{n}")  # 4 messages into each of 5 private chats
            await bot.drain()
            group_texts = [m["text"] for m in bot.bot_messages(-400)]
            stats = tg.stats(BOT)
    assert group_texts == [f"g{n} part {i}" for n in range(5) for i in range(4)]
    for n in range(5):
        assert len(bot.bot_messages(10 + n)) == 4
    sends = [e for e in api.log if e[1] == "sendMessage"]
    refusals = [e for e in sends if e[3] is not None]
    assert stats["rate_limited_429"] == len(refusals)
    if proactive:
        assert refusals == []
        return
    assert refusals, "the storm must have met flood control"
    for at, _, chat, retry in refusals:
        assert retry is not None
        early = [e for e in sends if e[2] == chat and at < e[0] < at + retry]
        assert early == [], f"calls into chat {chat} during its pause: {early}"
    assert len(refusals) <= 25  # waited out, not hammered: at most one 429 per message
