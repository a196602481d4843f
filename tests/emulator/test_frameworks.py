"""Unmodified python-telegram-bot 22, aiogram 3 and pyTelegramBotAPI 4, with their own
polling loops, run an echo bot and a bot with inline buttons against the emulator, and
parse every answer without a warning."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from antiloop.testing import Emulator

USER = 5001
GROUP = -1001000000001


@pytest.fixture
def no_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised while the test runs; the test fails if there is one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


async def scenario(emulator: Emulator, bot_id: int) -> None:
    """What a person does with the two bots, and what they must see."""
    await emulator.send(bot_id, USER, "hello there", first_name="Ann", username="ann")
    (echo,) = await emulator.wait_for_messages(USER, 1, within=10)
    assert echo["text"] == "hello there"
    assert echo["reply_to_message_id"] is not None

    await emulator.send(bot_id, USER, "/menu")
    menu = (await emulator.wait_for_messages(USER, 2, within=10))[-1]
    assert menu["text"] == "Pick one"
    buttons = menu["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == ["a", "b"]

    click = await emulator.click(bot_id, USER, menu["message_id"], "b")

    def edited() -> bool:
        last = next(m for m in emulator.messages(USER) if m["message_id"] == menu["message_id"])
        return (
            last["text"] == "Picked b"
            and emulator.callback_answer(click["callback_query_id"]) is not None
        )

    await emulator.wait_for(edited, within=10)
    assert emulator.callback_answer(click["callback_query_id"])["text"] == "ok"  # type: ignore[index]

    await emulator.send(bot_id, 6002, "in a group", chat_id=GROUP, chat_title="Team")
    (group_echo,) = await emulator.wait_for_messages(GROUP, 1, within=10)
    assert group_echo["text"] == "in a group"

    stats = emulator.stats(bot_id)
    assert stats["callbacks"]["answered"] == 1
    assert stats["callbacks"]["answered_twice"] == 0
    assert stats["conflicts_409"] == 0
    assert stats["calls"]["getUpdates"] >= 1


async def test_python_telegram_bot(
    emulator: Emulator, no_warnings: list[warnings.WarningMessage]
) -> None:
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
    from telegram.ext import (
        ApplicationBuilder,
        CallbackQueryHandler,
        CommandHandler,
        ContextTypes,
        MessageHandler,
        filters,
    )

    bot_id = 2001

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        await update.message.reply_text(update.message.text, do_quote=True)

    async def menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        keyboard = [
            [
                InlineKeyboardButton("A", callback_data="a"),
                InlineKeyboardButton("B", callback_data="b"),
            ]
        ]
        await update.message.reply_text("Pick one", reply_markup=InlineKeyboardMarkup(keyboard))

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("ok")
        await query.edit_message_text(f"Picked {query.data}")

    app = (
        ApplicationBuilder()
        .token(Emulator.token_for(bot_id))
        .base_url(f"{emulator.base_url}/bot")
        .base_file_url(f"{emulator.base_url}/file/bot")
        .build()
    )
    app.add_handler(CommandHandler("menu", menu))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    app.add_handler(CallbackQueryHandler(pressed))
    async with app:
        assert app.bot.username == f"emu{bot_id}_bot"
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=1)
        try:
            await scenario(emulator, bot_id)
            chat = await app.bot.get_chat(USER)
            assert chat.first_name == "Ann"
            info = await app.bot.get_webhook_info()
            assert info.url == ""
        finally:
            await app.updater.stop()
            await app.stop()


async def test_aiogram(emulator: Emulator, no_warnings: list[warnings.WarningMessage]) -> None:
    from aiogram import Bot, Dispatcher, F
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.filters import Command
    from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

    bot_id = 2002
    dp = Dispatcher()

    @dp.message(Command("menu"))
    async def menu(message: Message) -> None:
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(text="A", callback_data="a"),
                    InlineKeyboardButton(text="B", callback_data="b"),
                ]
            ]
        )
        await message.answer("Pick one", reply_markup=keyboard)

    @dp.message(F.text)
    async def echo(message: Message) -> None:
        assert message.text is not None
        await message.reply(message.text)

    @dp.callback_query()
    async def pressed(query: CallbackQuery) -> None:
        await query.answer("ok")
        assert isinstance(query.message, Message)
        await query.message.edit_text(f"Picked {query.data}")

    session = AiohttpSession(api=TelegramAPIServer.from_base(emulator.base_url))
    bot = Bot(Emulator.token_for(bot_id), session=session)
    polling = asyncio.create_task(
        dp.start_polling(bot, handle_signals=False, close_bot_session=True, polling_timeout=1)
    )
    try:
        await scenario(emulator, bot_id)
        chat = await bot.get_chat(USER)
        assert chat.first_name == "Ann"
        me = await bot.get_me()
        assert me.id == bot_id
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(polling, 10)


TELEBOT_BOT = textwrap.dedent(
    """
    import sys
    import warnings

    warnings.simplefilter("error")
    import telebot
    from telebot import apihelper, types

    base_url, token = sys.argv[1], sys.argv[2]
    apihelper.API_URL = base_url + "/bot{0}/{1}"
    bot = telebot.TeleBot(token, threaded=False)

    @bot.message_handler(commands=["menu"])
    def menu(message):
        keyboard = types.InlineKeyboardMarkup()
        keyboard.row(
            types.InlineKeyboardButton("A", callback_data="a"),
            types.InlineKeyboardButton("B", callback_data="b"),
        )
        bot.send_message(message.chat.id, "Pick one", reply_markup=keyboard)

    @bot.message_handler(commands=["stop"])
    def stop(message):
        bot.send_message(message.chat.id, "bye")
        bot.stop_polling()

    @bot.message_handler(content_types=["text"])
    def echo(message):
        bot.reply_to(message, message.text)

    @bot.callback_query_handler(func=lambda call: True)
    def pressed(call):
        bot.answer_callback_query(call.id, "ok")
        bot.edit_message_text("Picked " + call.data, call.message.chat.id, call.message.message_id)

    me = bot.get_me()
    assert me.username == "emu%d_bot" % me.id, me
    bot.polling(non_stop=False, interval=0, timeout=1)
    print("telebot stopped cleanly")
    """
)


async def test_pytelegrambotapi_in_a_subprocess(emulator: Emulator, tmp_path: Path) -> None:
    bot_id = 2003
    script = tmp_path / "telebot_bot.py"
    script.write_text(TELEBOT_BOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        str(script),
        emulator.base_url,
        Emulator.token_for(bot_id),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await emulator.wait_for(
            lambda: emulator.stats(bot_id)["calls"].get("getUpdates", 0) > 0, within=20
        )
        await scenario(emulator, bot_id)
        await emulator.send(bot_id, USER, "/stop")
        stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == "telebot stopped cleanly"
    assert stderr.decode().strip() == ""
    assert emulator.messages(USER)[-1]["text"] == "bye"
