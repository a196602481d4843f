"""Edges of the adapters: a framework may not poll; uploads bypass the outbox but not the ledger."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from antiloop.adapters import adapt, current_context
from antiloop.testing import Emulator
from tests.adapters.conftest import under_antiloop

USER = 7201
pytestmark = pytest.mark.antiloop_emulator(rate_limits=False)


async def test_ptb_cannot_poll_and_uploads_are_replay_safe(emulator: Emulator,
                                                           tmp_path: Path) -> None:
    from telegram import Update
    from telegram.error import Conflict
    from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes

    bot_id = 3201
    counts: Counter[str] = Counter()

    async def poll(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        ctx = current_context()
        assert ctx is not None and ctx.update_id == update.update_id
        try:
            await context.bot.get_updates()
        except Conflict as exc:
            await context.bot.send_message(update.effective_chat.id, f"refused: {exc.message}")

    async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_photo(update.effective_chat.id, b"\x89PNG fake", caption="pic")
        counts["photo"] += 1
        if counts["photo"] == 1:
            raise RuntimeError("fails after the upload")
        await context.bot.send_message(update.effective_chat.id, "uploaded")

    app = (ApplicationBuilder().token(Emulator.token_for(bot_id))
           .base_url(f"{emulator.base_url}/bot").build())
    app.add_handler(CommandHandler("poll", poll))
    app.add_handler(CommandHandler("photo", photo))
    handler: Any = adapt(app)
    async with under_antiloop(handler, emulator, tmp_path, bot_id):
        await emulator.send(bot_id, USER, "/poll")
        await emulator.wait_for(lambda: any(
            str(m.get("text", "")).startswith("refused: Conflict: antiloop polls")
            for m in emulator.messages(USER, bot_id)), within=10)
        await emulator.send(bot_id, USER, "/photo")
        await emulator.wait_for(lambda: any(
            m.get("text") == "uploaded" for m in emulator.messages(USER, bot_id)), within=10)
    stats = emulator.stats(bot_id)
    assert counts["photo"] == 2
    assert stats["calls"]["sendPhoto"] == 1  # the retry skipped the recorded upload
    assert stats["getupdates_pollers_max"] == 1
    assert stats["calls"].get("getUpdates", 0) >= 1  # antiloop's own


async def test_telebot_sync_upload_is_replay_safe(emulator: Emulator, tmp_path: Path) -> None:
    import io

    import telebot

    bot_id = 3202
    counts: Counter[str] = Counter()
    bot = telebot.TeleBot(Emulator.token_for(bot_id))
    telebot.apihelper.API_URL = f"{emulator.base_url}/bot{{0}}/{{1}}"
    try:
        @bot.message_handler(commands=["doc"])
        def doc(message: Any) -> None:
            bot.send_document(message.chat.id, io.BytesIO(b"hello"), visible_file_name="a.txt")
            counts["doc"] += 1
            if counts["doc"] == 1:
                raise RuntimeError("fails after the upload")
            bot.send_message(message.chat.id, "sent")

        handler: Any = adapt(bot)
        async with under_antiloop(handler, emulator, tmp_path, bot_id):
            await emulator.send(bot_id, USER, "/doc")
            await emulator.wait_for(lambda: any(
                m.get("text") == "sent" for m in emulator.messages(USER, bot_id)), within=10)
    finally:
        telebot.apihelper.API_URL = None
    assert counts["doc"] == 2
    assert emulator.stats(bot_id)["calls"]["sendDocument"] == 1
