"""The wire: tokens, method names, body encodings, result shapes, Telegram's 400 texts."""

from __future__ import annotations

import aiohttp
import pytest

from antiloop.testing import Emulator
from antiloop.testing.client import RawBotClient as RawBot

USER = 5001
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
KEYBOARD = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}


async def test_malformed_token_is_401_in_telegram_shape(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    for token in ("abc", "123", "123:", ":abc", "12a:xyz", "0:abc", "123:a b"):
        async with http.get(f"{emulator.base_url}/bot{token}/getMe") as response:
            assert response.status == 401, token
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }


async def test_unknown_method_is_404_in_telegram_shape(bot: RawBot) -> None:
    status, body = await bot.call("sendTelepathy", chat_id=1)
    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_paths_outside_the_api_are_404(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emulator.base_url}/nothing/here") as response:
        assert response.status == 404
        assert (await response.json())["error_code"] == 404


async def test_method_names_are_case_insensitive_and_counted_canonically(
    emulator: Emulator, bot: RawBot
) -> None:
    for name in ("getMe", "getme", "GETME", "GeTmE"):
        me = await bot.ok(name)
        assert me["id"] == bot.bot_id
    await bot.ok(
        "SENDCHATACTION",
        chat_id=(await emulator.send(bot.bot_id, USER, "hi"))["chat_id"],
        action="typing",
    )
    calls = emulator.stats(bot.bot_id)["calls"]
    assert calls["getMe"] == 4
    assert calls["sendChatAction"] == 1
    assert "getme" not in calls


async def test_get_me_shape(bot: RawBot) -> None:
    me = await bot.ok("getMe")
    assert me["is_bot"] is True
    assert me["id"] == bot.bot_id
    assert isinstance(me["first_name"], str) and me["first_name"]
    assert me["username"].endswith("bot")
    for flag in ("can_join_groups", "can_read_all_group_messages", "supports_inline_queries"):
        assert isinstance(me[flag], bool)


async def test_each_bot_id_has_its_own_state(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    one = RawBot(http, emulator.base_url, Emulator.token_for(1))
    two = RawBot(http, emulator.base_url, Emulator.token_for(2))
    await emulator.send(1, USER, "for one")
    assert [u["message"]["text"] for u in await one.ok("getUpdates")] == ["for one"]
    assert await two.ok("getUpdates") == []
    status, description = await two.error("sendMessage", chat_id=USER, text="x")
    assert (status, description) == (400, "Bad Request: chat not found")
    # any secret works for a bot id: same state
    other_secret = RawBot(http, emulator.base_url, "1:another-secret_value")
    assert len(await other_secret.ok("getUpdates")) == 1


@pytest.mark.parametrize("encoding", ["json", "form", "query", "multipart"])
async def test_every_body_encoding_is_understood(
    emulator: Emulator, bot: RawBot, encoding: str
) -> None:
    sent = await emulator.send(bot.bot_id, USER, "hello")
    status, body = await bot.call(
        "sendMessage",
        encoding=encoding,
        chat_id=USER,
        text="answer",
        reply_markup=KEYBOARD,
        reply_parameters={"message_id": sent["message_id"]},
        disable_notification=True,
    )
    assert status == 200, body
    message = body["result"]
    assert message["text"] == "answer"
    assert message["reply_markup"] == KEYBOARD
    assert message["reply_to_message"]["message_id"] == sent["message_id"]
    assert message["chat"] == {"id": USER, "first_name": f"User {USER}", "type": "private"}


async def test_query_string_and_body_are_merged(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    async with bot.session.post(
        bot.url("sendMessage") + f"?chat_id={USER}", data={"text": "merged"}
    ) as response:
        body = await response.json()
    assert body["ok"] is True and body["result"]["text"] == "merged"


async def test_reply_markup_as_json_string_inside_json_body(
    emulator: Emulator, bot: RawBot
) -> None:
    import json

    await emulator.send(bot.bot_id, USER, "hi")
    message = await bot.ok(
        "sendMessage", chat_id=str(USER), text="x", reply_markup=json.dumps(KEYBOARD)
    )
    assert message["reply_markup"] == KEYBOARD


async def test_message_shape_of_a_bot_reply(emulator: Emulator, bot: RawBot) -> None:
    sent = await emulator.send(bot.bot_id, USER, "/start now", first_name="Ann", username="ann")
    message = await bot.ok(
        "sendMessage", chat_id=USER, text="Welcome", reply_to_message_id=sent["message_id"]
    )
    assert message["message_id"] == sent["message_id"] + 1
    assert isinstance(message["date"], int)
    assert message["from"]["id"] == bot.bot_id and message["from"]["is_bot"] is True
    assert message["chat"]["type"] == "private"
    replied = message["reply_to_message"]
    assert replied["text"] == "/start now"
    assert replied["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert replied["from"] == {
        "id": USER,
        "is_bot": False,
        "first_name": "Ann",
        "language_code": "en",
        "username": "ann",
    }
    assert "reply_to_message" not in replied


async def test_bot_command_entities_use_utf16_offsets(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "👍 /help@emu111_bot me, not/this")
    (update,) = await bot.ok("getUpdates")
    assert update["message"]["entities"] == [{"type": "bot_command", "offset": 3, "length": 16}]


async def test_send_message_errors(emulator: Emulator, bot: RawBot) -> None:
    assert await bot.error("sendMessage", chat_id=USER, text="x") == (
        400,
        "Bad Request: chat not found",
    )
    await emulator.send(bot.bot_id, USER, "hi")
    assert await bot.error("sendMessage", chat_id=USER, text="") == (
        400,
        "Bad Request: message text is empty",
    )
    assert await bot.error("sendMessage", chat_id=USER) == (
        400,
        "Bad Request: message text is empty",
    )
    assert await bot.error("sendMessage", text="x") == (400, "Bad Request: chat_id is empty")
    assert await bot.error("sendMessage", chat_id=USER, text="x" * 4097) == (
        400,
        "Bad Request: message is too long",
    )
    assert await bot.error(
        "sendMessage", chat_id=USER, text="x", reply_parameters={"message_id": 999}
    ) == (400, "Bad Request: message to be replied not found")
    ok = await bot.ok(
        "sendMessage",
        chat_id=USER,
        text="x",
        reply_parameters={"message_id": 999, "allow_sending_without_reply": True},
    )
    assert "reply_to_message" not in ok
    assert await bot.error("sendMessage", chat_id=USER, text="x", reply_markup="{nope") == (
        400,
        "Bad Request: can't parse reply_markup JSON object",
    )
    bad_button = {"inline_keyboard": [[{"text": "x", "callback_data": "d" * 65}]]}
    assert await bot.error("sendMessage", chat_id=USER, text="x", reply_markup=bad_button) == (
        400,
        "Bad Request: BUTTON_DATA_INVALID",
    )


async def test_parse_mode_text_is_shown_without_marks(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    html = await bot.ok("sendMessage", chat_id=USER, text="<b>bold</b> &amp; co", parse_mode="HTML")
    assert html["text"] == "bold & co"
    md = await bot.ok("sendMessage", chat_id=USER, text=r"*hi* 1\.5", parse_mode="MarkdownV2")
    assert md["text"] == "hi 1.5"


async def test_edit_message_text_and_not_modified(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    sent = await bot.ok("sendMessage", chat_id=USER, text="one", reply_markup=KEYBOARD)
    mid = sent["message_id"]
    edited = await bot.ok(
        "editMessageText", chat_id=USER, message_id=mid, text="two", reply_markup=KEYBOARD
    )
    assert edited["text"] == "two" and isinstance(edited["edit_date"], int)
    assert edited["reply_markup"] == KEYBOARD
    assert await bot.error(
        "editMessageText", chat_id=USER, message_id=mid, text="two", reply_markup=KEYBOARD
    ) == (400, NOT_MODIFIED)
    # leaving reply_markup out removes the keyboard, which is a modification
    plain = await bot.ok("editMessageText", chat_id=USER, message_id=mid, text="two")
    assert "reply_markup" not in plain
    assert await bot.error("editMessageText", chat_id=USER, message_id=mid, text="") == (
        400,
        "Bad Request: message text is empty",
    )
    assert await bot.error("editMessageText", chat_id=USER, message_id=9999, text="z") == (
        400,
        "Bad Request: message to edit not found",
    )
    assert await bot.error("editMessageText", chat_id=USER, message_id=1, text="z") == (
        400,
        "Bad Request: message can't be edited",
    )
    (entry,) = [m for m in emulator.messages(USER) if m["message_id"] == mid]
    assert entry["edits"] == 2 and entry["text"] == "two"


async def test_edit_message_reply_markup(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    mid = (await bot.ok("sendMessage", chat_id=USER, text="q", reply_markup=KEYBOARD))["message_id"]
    assert await bot.error(
        "editMessageReplyMarkup", chat_id=USER, message_id=mid, reply_markup=KEYBOARD
    ) == (400, NOT_MODIFIED)
    cleared = await bot.ok("editMessageReplyMarkup", chat_id=USER, message_id=mid)
    assert "reply_markup" not in cleared
    assert await bot.error("editMessageReplyMarkup", chat_id=USER, message_id=mid) == (
        400,
        NOT_MODIFIED,
    )


async def test_delete_message(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    mid = (await bot.ok("sendMessage", chat_id=USER, text="bye"))["message_id"]
    assert await bot.ok("deleteMessage", chat_id=USER, message_id=mid) is True
    assert await bot.error("deleteMessage", chat_id=USER, message_id=mid) == (
        400,
        "Bad Request: message to delete not found",
    )
    assert await bot.error("editMessageText", chat_id=USER, message_id=mid, text="z") == (
        400,
        "Bad Request: message to edit not found",
    )
    entry = emulator.messages(USER)[-1]
    assert entry["deleted"] is True and entry["message_id"] == mid


async def test_group_messages_and_delete_rules(emulator: Emulator, bot: RawBot) -> None:
    group = -100200300
    sent = await emulator.send(bot.bot_id, USER, "hello all", chat_id=group, chat_title="Team")
    (update,) = await bot.ok("getUpdates")
    assert update["message"]["chat"] == {"id": group, "title": "Team", "type": "group"}
    assert await bot.error("deleteMessage", chat_id=group, message_id=sent["message_id"]) == (
        400,
        "Bad Request: message can't be deleted",
    )
    supergroup = await emulator.send(bot.bot_id, USER, "x", chat_id=-1001234567890)
    chat = await bot.ok("getChat", chat_id=supergroup["chat_id"])
    assert chat["type"] == "supergroup"


async def test_get_chat_send_chat_action_and_commands(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "hi", first_name="Ann")
    chat = await bot.ok("getChat", chat_id=USER)
    assert chat["id"] == USER and chat["type"] == "private" and chat["first_name"] == "Ann"
    assert isinstance(chat["accent_color_id"], int)
    assert isinstance(chat["max_reaction_count"], int)
    assert set(chat["accepted_gift_types"]) >= {"unlimited_gifts", "unique_gifts"}
    assert await bot.error("getChat", chat_id=42) == (400, "Bad Request: chat not found")
    assert await bot.ok("sendChatAction", chat_id=USER, action="typing") is True
    assert await bot.error("sendChatAction", chat_id=USER, action="dancing") == (
        400,
        "Bad Request: wrong parameter action in request",
    )
    commands = [{"command": "start", "description": "Start"}]
    assert await bot.ok("getMyCommands") == []
    assert await bot.ok("setMyCommands", commands=commands) is True
    assert await bot.ok("getMyCommands") == commands
    scoped = {"type": "all_private_chats"}
    assert await bot.ok("getMyCommands", scope=scoped) == []
    assert await bot.error(
        "setMyCommands", commands=[{"command": "Bad Cmd", "description": "d"}]
    ) == (
        400,
        "Bad Request: BOT_COMMAND_INVALID",
    )
    assert await bot.ok("deleteMyCommands") is True
    assert await bot.ok("getMyCommands") == []
    assert await bot.ok("logOut") is True
    assert await bot.ok("close") is True


async def test_send_document_multipart_upload(emulator: Emulator, bot: RawBot) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    form = aiohttp.FormData()
    form.add_field("chat_id", str(USER))
    form.add_field("caption", "report")
    form.add_field("document", b"hello world", filename="r.txt", content_type="text/plain")
    async with bot.session.post(bot.url("sendDocument"), data=form) as response:
        body = await response.json()
    assert body["ok"] is True, body
    document = body["result"]["document"]
    assert document["file_name"] == "r.txt" and document["file_size"] == 11
    assert body["result"]["caption"] == "report"
