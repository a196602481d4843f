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


class Parsed:
    """Everything the runtime reads from one update, computed in one pass."""

    __slots__ = ("callback_query_id", "chat_id", "data", "inline_message_id", "kind", "message",
                 "message_id", "payload", "text", "user", "user_id")

    def __init__(self, update: dict[str, Any]) -> None:
        kind = update_type(update)
        raw = update.get(kind)
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self.kind = kind
        self.payload = body
        msg: dict[str, Any] | None
        if kind in MESSAGE_LIKE:
            msg = body
        elif kind == "callback_query":
            m = body.get("message")
            msg = m if isinstance(m, dict) else None
        else:
            msg = None
        self.message = msg
        chat = msg.get("chat") if msg is not None else None
        if not isinstance(chat, dict):
            chat = body.get("chat")
        self.chat_id = _int(chat.get("id")) if isinstance(chat, dict) else None
        who = body.get("from")
        if not isinstance(who, dict):
            who = body.get("user")
        self.user: dict[str, Any] | None = who if isinstance(who, dict) else None
        self.user_id = _int(self.user.get("id")) if self.user else None
        if kind == "callback_query":
            data = body.get("data")
            self.data = data if isinstance(data, str) else None
            cq = body.get("id")
            self.callback_query_id = cq if isinstance(cq, str) else None
            imid = body.get("inline_message_id") if self.callback_query_id is not None else None
            self.inline_message_id = imid if isinstance(imid, str) else None
            self.text = None
        else:
            self.data = None
            self.callback_query_id = None
            self.inline_message_id = None
            if msg is not None:
                value = msg.get("text", msg.get("caption"))
            else:
                value = body.get("query") if kind == "inline_query" else None
            self.text = value if isinstance(value, str) else None
        mid = msg.get("message_id") if msg else None
        self.message_id = mid if isinstance(mid, int) and not isinstance(mid, bool) else None
