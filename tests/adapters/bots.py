"""The same bot written with each framework, as its users would write it.

Commands: text -> echo; /menu -> "Pick one" with buttons a, b, silent; a press of a or b is
answered "ok" and edits the message to "Picked <data>" (keyboard kept); "silent" edits without
answering (antiloop answers); /two sends "first", fails on its first attempt, then sends
"second"; /boom always fails; /crash copies the message back, shows "typing" (by then the
copy is in the ledger: a call's record is durable before the update's next call), then (in the
first process only) hangs until killed, then sends "after crash". ``counts`` counts handler runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

BUTTONS = ["a", "b", "silent"]


def _first_run() -> bool:
    """True in the first process to get here (it leaves a marker file and is then killed)."""
    marker = Path(os.environ.get("ANTILOOP_TEST_MARKER", "/nonexistent/marker"))
    if marker.exists() or not marker.parent.is_dir():
        return False
    marker.touch()
    return True


def _should_fail_two(counts: Counter[str]) -> bool:
    counts["two"] += 1
    return counts["two"] == 1


def ptb_app(token: str, base_url: str, counts: Counter[str]) -> Any:
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
    from telegram.ext import (
        ApplicationBuilder,
        CallbackQueryHandler,
        CommandHandler,
        ContextTypes,
        MessageHandler,
        filters,
    )

    markup = InlineKeyboardMarkup([[InlineKeyboardButton(b, callback_data=b) for b in BUTTONS]])

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        counts["echo"] += 1
        assert update.message is not None and update.message.text is not None
        await update.message.reply_text(update.message.text)

    async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        counts["menu"] += 1
        assert update.message is not None
        await update.message.reply_text("Pick one", reply_markup=markup)

    async def two(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, "first")
        if _should_fail_two(counts):
            raise RuntimeError("fails after the first send")
        await context.bot.send_message(update.effective_chat.id, "second")

    async def boom(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        counts["boom"] += 1
        raise RuntimeError("boom")

    async def crash(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        chat = update.message.chat_id
        await context.bot.copy_message(chat, chat, update.message.message_id)
        await context.bot.send_chat_action(chat, "typing")  # the copy's record is durable now
        if _first_run():
            await asyncio.sleep(120)  # killed here
        await context.bot.send_message(chat, "after crash")

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        counts["press"] += 1
        if query.data != "silent":
            await query.answer("ok")
        await query.edit_message_text(f"Picked {query.data}", reply_markup=markup)

    app = (ApplicationBuilder().token(token).base_url(f"{base_url}/bot")
           .base_file_url(f"{base_url}/file/bot").build())
    app.add_handler(CommandHandler("menu", menu))
    app.add_handler(CommandHandler("two", two))
    app.add_handler(CommandHandler("boom", boom))
    app.add_handler(CommandHandler("crash", crash))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    app.add_handler(CallbackQueryHandler(pressed))
    return app


def aiogram_dp(counts: Counter[str]) -> Any:
    from aiogram import Bot, Dispatcher, F
    from aiogram.filters import Command
    from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

    markup = InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=b, callback_data=b) for b in BUTTONS]])
    dp = Dispatcher()

    @dp.startup()
    async def on_startup() -> None:
        counts["startup"] += 1

    @dp.shutdown()
    async def on_shutdown() -> None:
        counts["shutdown"] += 1

    @dp.message(Command("menu"))
    async def menu(message: Message) -> None:
        counts["menu"] += 1
        await message.answer("Pick one", reply_markup=markup)

    @dp.message(Command("two"))
    async def two(message: Message, bot: Bot) -> None:
        await bot.send_message(message.chat.id, "first")
        if _should_fail_two(counts):
            raise RuntimeError("fails after the first send")
        await bot.send_message(message.chat.id, "second")

    @dp.message(Command("boom"))
    async def boom(message: Message) -> None:
        counts["boom"] += 1
        raise RuntimeError("boom")

    @dp.message(Command("crash"))
    async def crash(message: Message, bot: Bot) -> None:
        await bot.copy_message(message.chat.id, message.chat.id, message.message_id)
        await bot.send_chat_action(message.chat.id, "typing")  # the copy's record is durable now
        if _first_run():
            await asyncio.sleep(120)  # killed here
        await bot.send_message(message.chat.id, "after crash")

    @dp.message(F.text)
    async def echo(message: Message) -> None:
        counts["echo"] += 1
        assert message.text is not None
        await message.answer(message.text)

    @dp.callback_query()
    async def pressed(query: CallbackQuery) -> None:
        counts["press"] += 1
        if query.data != "silent":
            await query.answer("ok")
        assert query.message is not None
        await query.message.edit_text(f"Picked {query.data}", reply_markup=markup)  # type: ignore[union-attr]

    return dp


def _telebot_markup() -> Any:
    from telebot import types

    markup = types.InlineKeyboardMarkup()
    markup.row(*[types.InlineKeyboardButton(b, callback_data=b) for b in BUTTONS])
    return markup


def telebot_bot(token: str, counts: Counter[str]) -> Any:
    import telebot

    bot = telebot.TeleBot(token)  # threaded=True by default: the adapter runs it unthreaded

    @bot.message_handler(commands=["menu"])
    def menu(message: Any) -> None:
        counts["menu"] += 1
        bot.send_message(message.chat.id, "Pick one", reply_markup=_telebot_markup())

    @bot.message_handler(commands=["two"])
    def two(message: Any) -> None:
        bot.send_message(message.chat.id, "first")
        if _should_fail_two(counts):
            raise RuntimeError("fails after the first send")
        bot.send_message(message.chat.id, "second")

    @bot.message_handler(commands=["boom"])
    def boom(message: Any) -> None:
        counts["boom"] += 1
        raise RuntimeError("boom")

    @bot.message_handler(commands=["crash"])
    def crash(message: Any) -> None:
        bot.copy_message(message.chat.id, message.chat.id, message.message_id)
        bot.send_chat_action(message.chat.id, "typing")  # the copy's record is durable now
        if _first_run():
            time.sleep(120)  # killed here
        bot.send_message(message.chat.id, "after crash")

    @bot.message_handler(content_types=["text"])
    def echo(message: Any) -> None:
        counts["echo"] += 1
        bot.send_message(message.chat.id, message.text)

    @bot.callback_query_handler(func=lambda call: True)
    def pressed(call: Any) -> None:
        counts["press"] += 1
        if call.data != "silent":
            bot.answer_callback_query(call.id, "ok")
        bot.edit_message_text(f"Picked {call.data}", call.message.chat.id,
                              call.message.message_id, reply_markup=_telebot_markup())

    return bot


def async_telebot_bot(token: str, counts: Counter[str]) -> Any:
    from telebot.async_telebot import AsyncTeleBot

    bot = AsyncTeleBot(token)

    @bot.message_handler(commands=["menu"])
    async def menu(message: Any) -> None:
        counts["menu"] += 1
        await bot.send_message(message.chat.id, "Pick one", reply_markup=_telebot_markup())

    @bot.message_handler(commands=["two"])
    async def two(message: Any) -> None:
        await bot.send_message(message.chat.id, "first")
        if _should_fail_two(counts):
            raise RuntimeError("fails after the first send")
        await bot.send_message(message.chat.id, "second")

    @bot.message_handler(commands=["boom"])
    async def boom(message: Any) -> None:
        counts["boom"] += 1
        raise RuntimeError("boom")

    @bot.message_handler(commands=["crash"])
    async def crash(message: Any) -> None:
        await bot.copy_message(message.chat.id, message.chat.id, message.message_id)
        await bot.send_chat_action(message.chat.id, "typing")  # the copy's record is durable now
        if _first_run():
            await asyncio.sleep(120)  # killed here
        await bot.send_message(message.chat.id, "after crash")

    @bot.message_handler(content_types=["text"])
    async def echo(message: Any) -> None:
        counts["echo"] += 1
        await bot.reply_to(message, message.text)

    @bot.callback_query_handler(func=lambda call: True)
    async def pressed(call: Any) -> None:
        counts["press"] += 1
        if call.data != "silent":
            await bot.answer_callback_query(call.id, "ok")
        await bot.edit_message_text(f"Picked {call.data}", call.message.chat.id,
                                    call.message.message_id, reply_markup=_telebot_markup())

    return bot


# For `antiloop run tests/adapters/bots.py:<name>` in a subprocess: built from the environment.
if os.environ.get("ANTILOOP_TEST_FRAMEWORK"):
    _token = os.environ["ANTILOOP_TEST_TOKEN"]
    _url = os.environ["ANTILOOP_TEST_API_URL"]
    _counts: Counter[str] = Counter()
    _which = os.environ["ANTILOOP_TEST_FRAMEWORK"]
    if _which == "ptb":
        application = ptb_app(_token, _url, _counts)
    elif _which == "aiogram":
        dp = aiogram_dp(_counts)
    elif _which == "telebot":
        bot = telebot_bot(_token, _counts)
    elif _which == "async_telebot":
        bot = async_telebot_bot(_token, _counts)
