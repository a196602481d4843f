"""Bot API methods that only read or change a bot's state (no waiting, no I/O).

Each method takes ``(api, bot, params)`` and returns the ``result`` of a successful
answer, or raises :class:`~antiloop.testing.state.ApiError` with Telegram's own error
text. ``getUpdates`` and the webhook methods need the event loop and live in
:mod:`antiloop.testing.emulator`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from antiloop.testing.state import (
    ApiError,
    BotState,
    CallbackRecord,
    Chat,
    StoredMessage,
    strip_markup,
    utf16_len,
)

__all__ = [
    "FLOOD_METHODS",
    "SYNC_METHODS",
    "MethodContext",
    "Params",
    "UploadedFile",
]

CHAT_NOT_FOUND = "Bad Request: chat not found"
TEXT_EMPTY = "Bad Request: message text is empty"
TEXT_TOO_LONG = "Bad Request: message is too long"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
REPLY_NOT_FOUND = "Bad Request: message to be replied not found"
EDIT_NOT_FOUND = "Bad Request: message to edit not found"
DELETE_NOT_FOUND = "Bad Request: message to delete not found"

MAX_TEXT = 4096
MAX_CAPTION = 1024
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file part of a multipart request."""

    name: str
    filename: str
    content_type: str
    size: int


class Params:
    """The parameters of one request, from a query string, a form, multipart or JSON.

    Form, multipart and query values are strings (objects JSON-encoded inside them);
    JSON bodies carry real types. Every accessor accepts both.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __contains__(self, name: str) -> bool:
        return self._data.get(name) is not None

    def raw(self, name: str) -> Any:
        return self._data.get(name)

    def get_str(self, name: str) -> str | None:
        value = self._data.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, UploadedFile):
            return None
        return json.dumps(value)

    def get_int(self, name: str, default: int | None = None) -> int | None:
        value = self._data.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return default
            try:
                return int(text)
            except ValueError:
                pass
        raise ApiError(400, f'Bad Request: field "{name}" must be a valid Number')

    def get_float(self, name: str, default: float) -> float:
        value = self._data.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ApiError(400, f'Bad Request: field "{name}" must be a valid Number') from None

    def get_bool(self, name: str) -> bool:
        value = self._data.get(name)
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1")
        return False

    def get_json(self, name: str) -> Any:
        value = self._data.get(name)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            try:
                return json.loads(text)
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
        if isinstance(value, UploadedFile):
            return None
        return value

    def get_file(self, name: str) -> UploadedFile | None:
        value = self._data.get(name)
        return value if isinstance(value, UploadedFile) else None


class MethodContext(Protocol):
    """What the methods need from the emulator."""

    @property
    def answer_window(self) -> float: ...

    def now(self) -> float: ...


Method = Callable[[MethodContext, BotState, Params], Any]

# ---------------------------------------------------------------------------- helpers


def _chat(bot: BotState, params: Params) -> Chat:
    value = params.raw("chat_id")
    if value is None or value == "":
        raise ApiError(400, "Bad Request: chat_id is empty")
    if isinstance(value, str) and value.strip().startswith("@"):
        wanted = value.strip()[1:].lower()
        for chat in bot.chats.values():
            if chat.username and chat.username.lower() == wanted:
                return chat
        raise ApiError(400, CHAT_NOT_FOUND)
    try:
        chat_id = params.get_int("chat_id")
    except ApiError:
        raise ApiError(400, CHAT_NOT_FOUND) from None
    found = bot.chats.get(chat_id) if chat_id is not None else None
    if found is None:
        raise ApiError(400, CHAT_NOT_FOUND)
    return found


def _message_id(params: Params) -> int:
    message_id = params.get_int("message_id")
    if message_id is None:
        raise ApiError(400, "Bad Request: message identifier is not specified")
    return message_id


def _reply_markup(params: Params) -> dict[str, Any] | None:
    if "reply_markup" not in params:
        return None
    markup = params.get_json("reply_markup")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ApiError(400, "Bad Request: can't parse inline keyboard markup JSON object")
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: Text must be a String",
                    )
                actions = [key for key in button if key != "text"]
                if not actions:
                    raise ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard",
                    )
                data = button.get("callback_data")
                if data is not None and (
                    not isinstance(data, str) or not 1 <= len(data.encode()) <= 64
                ):
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    elif not any(key in markup for key in ("keyboard", "remove_keyboard", "force_reply")):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    return markup


def _entities(params: Params, name: str) -> list[dict[str, Any]] | None:
    value = params.get_json(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ApiError(400, f"Bad Request: can't parse {name} JSON object")
    return [e for e in value if isinstance(e, dict)] or None


def _text(params: Params, name: str = "text", limit: int = MAX_TEXT) -> tuple[str, str | None]:
    raw = params.get_str(name)
    parse_mode = params.get_str("parse_mode") or None
    text = strip_markup(raw or "", parse_mode)
    if not text.strip():
        raise ApiError(400, TEXT_EMPTY)
    if utf16_len(text) > limit:
        raise ApiError(400, TEXT_TOO_LONG)
    return text, parse_mode


def _reply_to(chat: Chat, params: Params) -> int | None:
    message_id = params.get_int("reply_to_message_id")
    allow_without = params.get_bool("allow_sending_without_reply")
    reply = params.get_json("reply_parameters")
    if isinstance(reply, dict):
        value = reply.get("message_id")
        message_id = value if isinstance(value, int) else message_id
        allow_without = bool(reply.get("allow_sending_without_reply", allow_without))
    if message_id is None:
        return None
    target = chat.messages.get(message_id)
    if target is None or target.deleted:
        if allow_without:
            return None
        raise ApiError(400, REPLY_NOT_FOUND)
    return message_id


def _flood(bot: BotState, chat: Chat) -> None:
    if bot.flood is None:
        return
    retry_after = bot.flood.acquire(chat.id)
    if retry_after is not None:
        bot.stats.rate_limited_429 += 1
        raise ApiError(
            429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
        )


def _bot_message(bot: BotState, params: Params, chat: Chat, *, edit: bool) -> StoredMessage:
    message_id = _message_id(params)
    msg = chat.messages.get(message_id)
    if msg is None or msg.deleted:
        raise ApiError(400, EDIT_NOT_FOUND)
    if not msg.from_bot or msg.sender.get("id") != bot.bot_id:
        raise ApiError(400, "Bad Request: message can't be edited")
    return msg


def _file_info(bot: BotState, params: Params, name: str) -> dict[str, Any]:
    upload = params.get_file(name)
    if upload is not None:
        key = f"{upload.filename}:{upload.size}"
        size = upload.size
        file_name = upload.filename
        mime = upload.content_type
    else:
        ref = params.get_str(name)
        if not ref:
            raise ApiError(400, f"Bad Request: there is no {name} in the request")
        key, size, file_name, mime = ref, 0, ref.rsplit("/", 1)[-1], "application/octet-stream"
    digest = hashlib.sha256(f"{bot.bot_id}:{key}".encode()).hexdigest()
    return {
        "file_id": f"EMU{digest[:40]}",
        "file_unique_id": f"U{digest[40:56]}",
        "file_size": size,
        "file_name": file_name,
        "mime_type": mime,
    }


def _caption(params: Params, extra: dict[str, Any]) -> None:
    caption = params.get_str("caption")
    if caption:
        text = strip_markup(caption, params.get_str("parse_mode"))
        if utf16_len(text) > MAX_CAPTION:
            raise ApiError(400, "Bad Request: message caption is too long")
        extra["caption"] = text
        entities = _entities(params, "caption_entities")
        if entities:
            extra["caption_entities"] = entities


def _send(
    bot: BotState,
    chat: Chat,
    params: Params,
    *,
    text: str | None,
    parse_mode: str | None = None,
    entities: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    markup = _reply_markup(params)
    reply_to = _reply_to(chat, params)
    _flood(bot, chat)
    msg = bot.add_message(
        chat,
        bot.user,
        from_bot=True,
        text=text,
        entities=entities,
        reply_markup=markup,
        reply_to_message_id=reply_to,
        parse_mode=parse_mode,
        extra=extra,
    )
    bot.stats.messages_sent += 1
    return chat.message_dict(msg)


# ---------------------------------------------------------------------------- methods


def get_me(api: MethodContext, bot: BotState, params: Params) -> Any:
    return {
        **bot.user,
        "can_join_groups": True,
        "can_read_all_group_messages": True,
        "supports_inline_queries": True,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def send_message(api: MethodContext, bot: BotState, params: Params) -> Any:
    chat = _chat(bot, params)
    text, parse_mode = _text(params)
    return _send(
        bot, chat, params, text=text, parse_mode=parse_mode, entities=_entities(params, "entities")
    )


def send_photo(api: MethodContext, bot: BotState, params: Params) -> Any:
    chat = _chat(bot, params)
    info = _file_info(bot, params, "photo")
    extra: dict[str, Any] = {
        "photo": [
            {
                "file_id": info["file_id"],
                "file_unique_id": info["file_unique_id"],
                "width": 90,
                "height": 90,
                "file_size": info["file_size"],
            }
        ]
    }
    _caption(params, extra)
    return _send(bot, chat, params, text=None, extra=extra)


def send_document(api: MethodContext, bot: BotState, params: Params) -> Any:
    chat = _chat(bot, params)
    extra: dict[str, Any] = {"document": _file_info(bot, params, "document")}
    _caption(params, extra)
    return _send(bot, chat, params, text=None, extra=extra)


def _source_message(bot: BotState, params: Params, verb: str) -> StoredMessage:
    """The message ``from_chat_id``/``message_id`` name, for copyMessage and forwardMessage."""
    source_id = params.get_int("from_chat_id")
    source = bot.chats.get(source_id) if source_id is not None else None
    if source is None:
        raise ApiError(400, CHAT_NOT_FOUND)
    original = source.messages.get(_message_id(params))
    if original is None or original.deleted:
        raise ApiError(400, f"Bad Request: message to {verb} not found")
    return original


def copy_message(api: MethodContext, bot: BotState, params: Params) -> Any:
    chat = _chat(bot, params)
    original = _source_message(bot, params, "copy")
    sent = _send(
        bot,
        chat,
        params,
        text=original.text,
        entities=original.entities,
        extra=dict(original.extra),
    )
    return {"message_id": sent["message_id"]}


def forward_message(api: MethodContext, bot: BotState, params: Params) -> Any:
    chat = _chat(bot, params)
    original = _source_message(bot, params, "forward")
    extra = dict(original.extra)
    extra["forward_origin"] = {
        "type": "user",
        "sender_user": original.sender,
        "date": original.date,
    }
    return _send(bot, chat, params, text=original.text, entities=original.entities, extra=extra)


def edit_message_text(api: MethodContext, bot: BotState, params: Params) -> Any:
    if "inline_message_id" in params:
        raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
    chat = _chat(bot, params)
    text, parse_mode = _text(params)
    entities = _entities(params, "entities")
    msg = _bot_message(bot, params, chat, edit=True)
    if msg.text is None:
        raise ApiError(400, "Bad Request: there is no text in the message to edit")
    markup = _reply_markup(params)
    inline = markup if markup is not None and "inline_keyboard" in markup else None
    if msg.text == text and msg.entities == entities and msg.inline_markup() == inline:
        raise ApiError(400, NOT_MODIFIED)
    _flood(bot, chat)
    msg.text, msg.entities, msg.parse_mode = text, entities, parse_mode
    msg.reply_markup = inline
    return _edited(api, bot, chat, msg)


def edit_message_caption(api: MethodContext, bot: BotState, params: Params) -> Any:
    if "inline_message_id" in params:
        raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
    chat = _chat(bot, params)
    msg = _bot_message(bot, params, chat, edit=True)
    if msg.text is not None:
        raise ApiError(400, "Bad Request: there is no caption in the message to edit")
    extra: dict[str, Any] = {}
    _caption(params, extra)
    markup = _reply_markup(params)
    inline = markup if markup is not None and "inline_keyboard" in markup else None
    old = {k: msg.extra.get(k) for k in ("caption", "caption_entities")}
    new = {k: extra.get(k) for k in ("caption", "caption_entities")}
    if old == new and msg.inline_markup() == inline:
        raise ApiError(400, NOT_MODIFIED)
    _flood(bot, chat)
    for key, value in new.items():
        if value is None:
            msg.extra.pop(key, None)
        else:
            msg.extra[key] = value
    msg.reply_markup = inline
    return _edited(api, bot, chat, msg)


def edit_message_reply_markup(api: MethodContext, bot: BotState, params: Params) -> Any:
    if "inline_message_id" in params:
        raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
    chat = _chat(bot, params)
    msg = _bot_message(bot, params, chat, edit=True)
    markup = _reply_markup(params)
    if markup is not None and "inline_keyboard" not in markup:
        raise ApiError(400, "Bad Request: inline keyboard expected")
    if msg.inline_markup() == markup:
        raise ApiError(400, NOT_MODIFIED)
    _flood(bot, chat)
    msg.reply_markup = markup
    return _edited(api, bot, chat, msg)


def _edited(api: MethodContext, bot: BotState, chat: Chat, msg: StoredMessage) -> Any:
    msg.edits += 1
    msg.edit_date = int(api.now())
    bot.stats.messages_edited += 1
    return chat.message_dict(msg)


def delete_message(api: MethodContext, bot: BotState, params: Params) -> Any:
    chat = _chat(bot, params)
    msg = chat.messages.get(_message_id(params))
    if msg is None or msg.deleted:
        raise ApiError(400, DELETE_NOT_FOUND)
    own = msg.from_bot and msg.sender.get("id") == bot.bot_id
    if not own and chat.type != "private":
        raise ApiError(400, "Bad Request: message can't be deleted")
    if api.now() - msg.date > 48 * 3600:
        raise ApiError(400, "Bad Request: message can't be deleted for everyone")
    msg.deleted = True
    bot.stats.messages_deleted += 1
    return True


def answer_callback_query(api: MethodContext, bot: BotState, params: Params) -> Any:
    query_id = params.get_str("callback_query_id")
    record: CallbackRecord | None = bot.callbacks.get(query_id) if query_id else None
    if record is None:
        raise ApiError(400, QUERY_TOO_OLD)
    now = api.now()
    if record.answered_at is not None:
        bot.stats.callbacks_answered_twice += 1
        raise ApiError(400, QUERY_TOO_OLD)
    if now - record.created_at > api.answer_window:
        bot.stats.callbacks_answered_late += 1
        raise ApiError(400, QUERY_TOO_OLD)
    text = params.get_str("text")
    if text is not None and len(text) > 200:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
    record.answered_at = now
    record.answer = {
        "text": text,
        "show_alert": params.get_bool("show_alert"),
        "url": params.get_str("url"),
        "cache_time": params.get_int("cache_time", 0),
    }
    bot.stats.callbacks_answered += 1
    return True


def answer_inline_query(api: MethodContext, bot: BotState, params: Params) -> Any:
    query_id = params.get_str("inline_query_id")
    created = bot.inline_queries.pop(query_id, None) if query_id else None
    if created is None or api.now() - created > api.answer_window:
        raise ApiError(400, QUERY_TOO_OLD)
    results = params.get_json("results")
    if not isinstance(results, list):
        raise ApiError(400, "Bad Request: can't parse inline query results JSON object")
    return True


def send_chat_action(api: MethodContext, bot: BotState, params: Params) -> Any:
    _chat(bot, params)
    action = params.get_str("action")
    if not action:
        raise ApiError(400, "Bad Request: action is empty")
    if action not in CHAT_ACTIONS:
        raise ApiError(400, "Bad Request: wrong parameter action in request")
    return True


def get_chat(api: MethodContext, bot: BotState, params: Params) -> Any:
    chat = _chat(bot, params)
    info = chat.as_dict()
    info.update(
        {
            "accent_color_id": chat.id % 7 if chat.id > 0 else 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }
    )
    return info


def _commands_key(params: Params) -> tuple[str, str]:
    scope = params.get_json("scope")
    scope_key = json.dumps(scope, sort_keys=True) if isinstance(scope, dict) else "default"
    if scope_key == json.dumps({"type": "default"}):
        scope_key = "default"
    return scope_key, (params.get_str("language_code") or "")


def set_my_commands(api: MethodContext, bot: BotState, params: Params) -> Any:
    commands = params.get_json("commands")
    if not isinstance(commands, list):
        raise ApiError(400, "Bad Request: can't parse commands JSON object")
    if len(commands) > 100:
        raise ApiError(400, "Bad Request: too many commands specified")
    clean: list[dict[str, Any]] = []
    for item in commands:
        if not isinstance(item, dict):
            raise ApiError(400, "Bad Request: can't parse BotCommand JSON object")
        command = str(item.get("command", "")).strip().lstrip("/").lower()
        description = str(item.get("description", "")).strip()
        if not _COMMAND_NAME.match(command):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(description) <= 256:
            raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        clean.append({"command": command, "description": description})
    key = _commands_key(params)
    if clean:
        bot.commands[key] = clean
    else:
        bot.commands.pop(key, None)
    return True


def get_my_commands(api: MethodContext, bot: BotState, params: Params) -> Any:
    return list(bot.commands.get(_commands_key(params), []))


def delete_my_commands(api: MethodContext, bot: BotState, params: Params) -> Any:
    bot.commands.pop(_commands_key(params), None)
    return True


SYNC_METHODS: dict[str, Method] = {
    "getMe": get_me,
    "sendMessage": send_message,
    "sendPhoto": send_photo,
    "sendDocument": send_document,
    "copyMessage": copy_message,
    "forwardMessage": forward_message,
    "editMessageText": edit_message_text,
    "editMessageCaption": edit_message_caption,
    "editMessageReplyMarkup": edit_message_reply_markup,
    "deleteMessage": delete_message,
    "answerCallbackQuery": answer_callback_query,
    "answerInlineQuery": answer_inline_query,
    "sendChatAction": send_chat_action,
    "getChat": get_chat,
    "setMyCommands": set_my_commands,
    "getMyCommands": get_my_commands,
    "deleteMyCommands": delete_my_commands,
}

FLOOD_METHODS: frozenset[str] = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "copyMessage",
        "forwardMessage",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
    }
)
"""Message-sending methods: flood-controlled, and the ones ``drop_after_send`` hits."""
