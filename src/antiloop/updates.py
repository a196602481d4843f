"""Reading raw Telegram updates: their type, chat, user and text, without trusting their shape."""

from __future__ import annotations

from typing import Any

UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "callback_query",
    "inline_query",
    "chosen_inline_result",
    "shipping_query",
    "pre_checkout_query",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
    "message_reaction_count",
    "chat_boost",
    "removed_chat_boost",
    "purchased_paid_media",
)

# Where an update lives for retention purposes (Telegram keeps callback queries 150 s, etc.).
MESSAGE_LIKE = ("message", "edited_message", "channel_post", "edited_channel_post",
                "business_message", "edited_business_message")


class MalformedUpdate(ValueError):
    """An update without an integer ``update_id`` or without any payload."""


def update_type(update: dict[str, Any]) -> str:
    for key in update:
        if key != "update_id":
            return key
    return "unknown"


def validate(update: Any) -> int:
    """Return the update_id of a well-formed update or raise :class:`MalformedUpdate`."""
    if not isinstance(update, dict):
        raise MalformedUpdate(f"an update must be a JSON object, not {type(update).__name__}")
    uid = update.get("update_id")
    if not isinstance(uid, int) or isinstance(uid, bool):
        raise MalformedUpdate("the update has no integer update_id")
    if len(update) < 2:
        raise MalformedUpdate(f"update {uid} carries no payload")
    return uid


def payload(update: dict[str, Any]) -> dict[str, Any]:
    value = update.get(update_type(update))
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def message_of(update: dict[str, Any]) -> dict[str, Any] | None:
    """The message an update is about: the message itself, or the one a button was on."""
    kind = update_type(update)
    body = payload(update)
    if kind in MESSAGE_LIKE:
        return body
    if kind == "callback_query":
        msg = body.get("message")
        return msg if isinstance(msg, dict) else None
    return None


def chat_id(update: dict[str, Any]) -> int | None:
    msg = message_of(update)
    if msg is not None:
        chat = msg.get("chat")
        if isinstance(chat, dict):
            return _int(chat.get("id"))
    chat = payload(update).get("chat")
    if isinstance(chat, dict):
        return _int(chat.get("id"))
    return None


def user(update: dict[str, Any]) -> dict[str, Any] | None:
    body = payload(update)
    for key in ("from", "user"):
        value = body.get(key)
        if isinstance(value, dict):
            return value
    return None


def user_id(update: dict[str, Any]) -> int | None:
    u = user(update)
    return _int(u.get("id")) if u else None


def order_key(update: dict[str, Any]) -> int | None:
    """Updates with the same key are handled one at a time, in order: the chat, else the user."""
    cid = chat_id(update)
    return cid if cid is not None else user_id(update)


def text(update: dict[str, Any]) -> str | None:
    msg = message_of(update)
    if msg is None or update_type(update) == "callback_query":
        body = payload(update)
        value = body.get("query") if update_type(update) == "inline_query" else None
        return value if isinstance(value, str) else None
    value = msg.get("text", msg.get("caption"))
    return value if isinstance(value, str) else None


def callback_data(update: dict[str, Any]) -> str | None:
    if update_type(update) != "callback_query":
        return None
    value = payload(update).get("data")
    return value if isinstance(value, str) else None
