"""Inline buttons: press, answer once within the window, second or late answers fail."""

from __future__ import annotations

import pytest

from antiloop.testing import Emulator, EmulatorError, ManualClock
from antiloop.testing.client import RawBotClient

USER = 5001
TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
KEYBOARD = {
    "inline_keyboard": [
        [{"text": "Yes", "callback_data": "yes"}, {"text": "No", "callback_data": "no"}],
        [{"text": "Site", "url": "https://example.org"}],
    ]
}


async def bot_message(emulator: Emulator, bot: RawBotClient) -> int:
    await emulator.send(bot.bot_id, USER, "/ask")
    sent = await bot.ok("sendMessage", chat_id=USER, text="Sure?", reply_markup=KEYBOARD)
    return int(sent["message_id"])


async def test_click_makes_a_callback_query_update(emulator: Emulator, bot: RawBotClient) -> None:
    mid = await bot_message(emulator, bot)
    click = await emulator.click(bot.bot_id, USER, mid, "yes")
    updates = await bot.ok("getUpdates", offset=-1)
    query = updates[0]["callback_query"]
    assert updates[0]["update_id"] == click["update_id"]
    assert query["id"] == click["callback_query_id"]
    assert query["data"] == "yes"
    assert query["from"]["id"] == USER
    assert isinstance(query["chat_instance"], str)
    assert query["message"]["message_id"] == mid
    assert query["message"]["reply_markup"] == KEYBOARD


async def test_first_answer_succeeds_second_fails(emulator: Emulator, bot: RawBotClient) -> None:
    mid = await bot_message(emulator, bot)
    query_id = (await emulator.click(bot.bot_id, USER, mid, "no"))["callback_query_id"]
    assert await bot.ok("answerCallbackQuery", callback_query_id=query_id, text="Noted") is True
    status, body = await bot.call("answerCallbackQuery", callback_query_id=query_id)
    assert status == 400
    assert body == {"ok": False, "error_code": 400, "description": TOO_OLD}
    assert emulator.callback_answer(query_id) == {
        "text": "Noted",
        "show_alert": False,
        "url": None,
        "cache_time": 0,
    }
    callbacks = emulator.stats()["callbacks"]
    assert callbacks["answered"] == 1 and callbacks["answered_twice"] == 1
    assert callbacks["unanswered"] == 0


async def test_unknown_query_id_fails(bot: RawBotClient) -> None:
    assert await bot.error("answerCallbackQuery", callback_query_id="123") == (400, TOO_OLD)


@pytest.mark.antiloop_emulator(clock=ManualClock(), answer_window=15.0)
async def test_late_answer_fails(emulator: Emulator, bot: RawBotClient) -> None:
    clock = emulator.clock
    assert isinstance(clock, ManualClock)
    mid = await bot_message(emulator, bot)
    on_time = (await emulator.click(bot.bot_id, USER, mid, "yes"))["callback_query_id"]
    late = (await emulator.click(bot.bot_id, USER, mid, "yes"))["callback_query_id"]
    clock.advance(15)
    assert await bot.ok("answerCallbackQuery", callback_query_id=on_time) is True
    clock.advance(1)
    assert await bot.error("answerCallbackQuery", callback_query_id=late) == (400, TOO_OLD)
    callbacks = emulator.stats()["callbacks"]
    assert callbacks == {
        "created": 2,
        "answered": 1,
        "unanswered": 1,
        "answered_twice": 0,
        "answered_late": 1,
    }


async def test_click_needs_a_matching_button(emulator: Emulator, bot: RawBotClient) -> None:
    mid = await bot_message(emulator, bot)
    with pytest.raises(EmulatorError, match="no inline button"):
        await emulator.click(bot.bot_id, USER, mid, "maybe")
    with pytest.raises(EmulatorError, match="no inline button"):
        await emulator.click(bot.bot_id, USER, mid - 1, "yes")  # the user's own message
    with pytest.raises(EmulatorError, match="not found"):
        await emulator.click(bot.bot_id, USER, 999, "yes")
    await bot.ok("editMessageReplyMarkup", chat_id=USER, message_id=mid)
    with pytest.raises(EmulatorError, match="no inline button"):
        await emulator.click(bot.bot_id, USER, mid, "yes")


async def test_press_answer_edit_round_trip(emulator: Emulator, bot: RawBotClient) -> None:
    mid = await bot_message(emulator, bot)
    await emulator.click(bot.bot_id, USER, mid, "yes")
    (update,) = await bot.ok("getUpdates", offset=-1)
    query = update["callback_query"]
    await bot.ok("answerCallbackQuery", callback_query_id=query["id"])
    await bot.ok(
        "editMessageText",
        chat_id=query["message"]["chat"]["id"],
        message_id=query["message"]["message_id"],
        text="You said yes",
    )
    last = emulator.messages(USER)[-1]
    assert (last["text"], last["edits"], last["reply_markup"]) == ("You said yes", 1, None)
