"""Each framework's bot, unmodified, under a real antiloop Runtime against the emulator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from antiloop.adapters import adapt
from antiloop.testing import Emulator
from tests.adapters import bots
from tests.adapters.conftest import under_antiloop

USER = 7001

# Flood control off: each test would otherwise wait out 429s (the outbox handles those).
pytestmark = pytest.mark.antiloop_emulator(rate_limits=False)


def texts(tg: Emulator, bot_id: int) -> list[str]:
    return [m["text"] for m in tg.messages(USER, bot_id) if m["from_bot"]]


async def scenario(tg: Emulator, bot_id: int, obj: Any, counts: Counter[str],
                   tmp_path: Path) -> None:
    handler = adapt(obj, debounce=30.0)
    assert handler is not None
    async with under_antiloop(handler, tg, tmp_path, bot_id) as rt:
        await tg.send(bot_id, USER, "hello")
        await tg.wait_for(lambda: texts(tg, bot_id) == ["hello"], within=10)

        await tg.send(bot_id, USER, "/menu")
        await tg.wait_for(lambda: texts(tg, bot_id)[-1:] == ["Pick one"], within=10)
        menu = [m for m in tg.messages(USER, bot_id) if m["from_bot"]][-1]
        mid = menu["message_id"]

        def shown() -> str:
            return str(next(m for m in tg.messages(USER, bot_id) if m["message_id"] == mid)["text"])

        press = await tg.click(bot_id, USER, mid, "b")
        await tg.wait_for(lambda: shown() == "Picked b"
                          and tg.callback_answer(press["callback_query_id"]) is not None, within=10)
        assert tg.callback_answer(press["callback_query_id"])["text"] == "ok"  # type: ignore[index]

        # An impatient user: two presses of one button -> one run, both answered once.
        first = await tg.click(bot_id, USER, mid, "a")
        again = await tg.click(bot_id, USER, mid, "a")
        await tg.wait_for(lambda: shown() == "Picked a"
                          and tg.stats(bot_id)["callbacks"]["answered"] == 3, within=10)
        assert tg.callback_answer(first["callback_query_id"])["text"] == "ok"  # type: ignore[index]
        assert tg.callback_answer(again["callback_query_id"]).get("text") is None  # type: ignore[union-attr]

        # A handler that never answers: antiloop answers when it returns.
        await tg.click(bot_id, USER, mid, "silent")
        await tg.wait_for(lambda: shown() == "Picked silent"
                          and tg.stats(bot_id)["callbacks"]["answered"] == 4, within=10)

        # Fails after its first send on the first attempt: the retry sends only the second.
        await tg.send(bot_id, USER, "/two")
        await tg.wait_for(lambda: texts(tg, bot_id)[-1:] == ["second"], within=10)

        # Always fails: retried, then parked as a dead letter.
        await tg.send(bot_id, USER, "/boom")
        await tg.wait_for(lambda: rt.worker is not None and rt.worker.dead == 1, within=10)
        assert rt.worker is not None
        handled = rt.worker.handled
    stats = tg.stats(bot_id)
    assert texts(tg, bot_id) == ["hello", "Picked silent", "first", "second"]  # menu edited
    assert counts["echo"] == 1 and counts["menu"] == 1
    assert counts["press"] == 3  # b, a (its repeat debounced), silent
    assert counts["two"] == 2  # failed once, then succeeded
    assert counts["boom"] == 3  # max_attempts
    assert handled == 7  # hello, /menu, 4 presses, /two
    assert stats["callbacks"] == {"created": 4, "answered": 4, "unanswered": 0,
                                  "answered_twice": 0, "answered_late": 0}
    assert stats["calls"]["sendMessage"] == 4
    assert stats["calls"]["editMessageText"] == 3
    assert stats["getupdates_pollers_max"] == 1 and stats["conflicts_409"] == 0


async def test_python_telegram_bot(emulator: Emulator, tmp_path: Path) -> None:
    counts: Counter[str] = Counter()
    app = bots.ptb_app(Emulator.token_for(3001), emulator.base_url, counts)
    await scenario(emulator, 3001, app, counts, tmp_path)
    assert not app.running


async def test_aiogram_bare_dispatcher(emulator: Emulator, tmp_path: Path) -> None:
    counts: Counter[str] = Counter()
    await scenario(emulator, 3002, bots.aiogram_dp(counts), counts, tmp_path)
    assert counts["startup"] == 1 and counts["shutdown"] == 1


async def test_aiogram_dispatcher_and_bot(emulator: Emulator, tmp_path: Path) -> None:
    from aiogram import Bot

    counts: Counter[str] = Counter()
    bot = Bot(Emulator.token_for(3003))
    await scenario(emulator, 3003, (bots.aiogram_dp(counts), bot), counts, tmp_path)


async def test_telebot_sync(emulator: Emulator, tmp_path: Path) -> None:
    from telebot import apihelper

    before = apihelper.CUSTOM_REQUEST_SENDER
    counts: Counter[str] = Counter()
    await scenario(emulator, 3004, bots.telebot_bot(Emulator.token_for(3004), counts),
                   counts, tmp_path)
    assert apihelper.CUSTOM_REQUEST_SENDER is before  # the module global is restored


async def test_telebot_async(emulator: Emulator, tmp_path: Path) -> None:
    from telebot import asyncio_helper

    before = asyncio_helper._process_request
    counts: Counter[str] = Counter()
    await scenario(emulator, 3005, bots.async_telebot_bot(Emulator.token_for(3005), counts),
                   counts, tmp_path)
    assert asyncio_helper._process_request is before


def test_adapt_returns_none_for_other_objects() -> None:
    async def handler(ctx: Any) -> None: ...

    assert adapt(handler) is None
    assert adapt(object()) is None
    assert adapt(("a", "b")) is None


def test_negative_debounce_is_refused() -> None:
    counts: Counter[str] = Counter()
    with pytest.raises(ValueError, match="debounce"):
        adapt(bots.aiogram_dp(counts), debounce=-1)
