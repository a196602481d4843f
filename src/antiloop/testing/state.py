"""The emulator's memory: one :class:`BotState` per bot id.

Everything here is plain data and synchronous logic (no I/O): the update queue with
Telegram's offset and retention rules, chats with their messages, callback queries,
counters. The HTTP layer (:mod:`antiloop.testing.emulator`) and webhook delivery
(:mod:`antiloop.testing.webhook`) drive it.

Cost per operation is bounded by what it touches: the update queue is an
``OrderedDict`` keyed by ``update_id`` (confirming pops from the front), messages are
dicts keyed by ``message_id`` per chat.
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from antiloop.testing.limits import FloodControl

__all__ = [
    "ALL_UPDATE_TYPES",
    "DEFAULT_UPDATE_TYPES",
    "RETENTION",
    "ApiError",
    "BotState",
    "CallbackRecord",
    "Chat",
    "Clock",
    "EmulatorError",
    "ManualClock",
    "Stats",
    "StoredMessage",
    "Update",
    "WebhookConfig",
    "command_entities",
    "strip_markup",
    "utf16_len",
]

Clock = Callable[[], float]
"""Returns the current Unix time in seconds. ``time.time`` by default."""

ALL_UPDATE_TYPES: tuple[str, ...] = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)
DEFAULT_UPDATE_TYPES: frozenset[str] = frozenset(ALL_UPDATE_TYPES) - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
"""What Telegram sends when ``allowed_updates`` was never set (or set to ``[]``)."""

RETENTION: dict[str, float] = {
    "callback_query": 150.0,
    "inline_query": 30.0,
}
"""Seconds an unconfirmed update of a type is kept; every other type: 24 h."""
DEFAULT_RETENTION = 24 * 3600.0


class ManualClock:
    """A clock that only moves when told to: ``clock.advance(151)``.

    Pass it as ``Emulator(clock=ManualClock())`` to test retention, the callback answer
    window and flood control without sleeping.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time())) if start is None else float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds


class ApiError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code": code, "description": ...}``."""

    def __init__(self, code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


class EmulatorError(ValueError):
    """A control call (``send``, ``click``, ...) that cannot be done; HTTP 400 on the wire."""


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's entity offsets."""
    return len(text.encode("utf-16-le")) // 2


_COMMAND = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/@])")


def command_entities(text: str) -> list[dict[str, Any]]:
    """``bot_command`` entities of a text, as Telegram detects them for incoming messages."""
    if "/" not in text:
        return []
    entities: list[dict[str, Any]] = []
    for match in _COMMAND.finditer(text):
        entities.append(
            {
                "type": "bot_command",
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group()),
            }
        )
    return entities


_HTML_TAG = re.compile(r"<[^>]*>")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MDV2_MARK = re.compile(r"(\\.)|[*_~|`]")
_MD_MARK = re.compile(r"[*_`]")


def strip_markup(text: str, parse_mode: str | None) -> str:
    """The plain text Telegram shows for ``text`` sent with ``parse_mode``.

    An approximation: formatting marks are removed, no formatting entities are made and
    malformed markup is not rejected.
    """
    mode = (parse_mode or "").lower()
    if mode == "html":
        return html.unescape(_HTML_TAG.sub("", text))
    if mode == "markdownv2":
        text = _MD_LINK.sub(r"\1", text)
        return _MDV2_MARK.sub(lambda m: m.group(1)[1] if m.group(1) else "", text)
    if mode == "markdown":
        return _MD_MARK.sub("", _MD_LINK.sub(r"\1", text))
    return text


@dataclass(slots=True)
class Update:
    update_id: int
    kind: str
    payload: dict[str, Any]
    """The whole update as sent: ``{"update_id": ..., kind: {...}}``."""
    created_at: float
    chat_key: int
    """Webhook ordering key: the chat id, or the user id for updates without a chat."""

    def expired(self, now: float) -> bool:
        return now - self.created_at > RETENTION.get(self.kind, DEFAULT_RETENTION)


@dataclass(slots=True)
class StoredMessage:
    message_id: int
    chat_id: int
    sender: dict[str, Any]
    from_bot: bool
    """True for messages the bot under test sent through the Bot API."""
    date: int
    text: str | None = None
    entities: list[dict[str, Any]] | None = None
    reply_markup: dict[str, Any] | None = None
    """Whatever markup was sent (inline keyboards are echoed back in API results)."""
    reply_to_message_id: int | None = None
    parse_mode: str | None = None
    edits: int = 0
    edit_date: int | None = None
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Further Message fields: ``photo``, ``document``, ``caption``, ..."""

    def inline_markup(self) -> dict[str, Any] | None:
        markup = self.reply_markup
        if markup is not None and "inline_keyboard" in markup:
            return markup
        return None

    def has_callback_button(self, data: str) -> bool:
        markup = self.inline_markup()
        if markup is None:
            return False
        for row in markup["inline_keyboard"]:
            for button in row:
                if isinstance(button, dict) and button.get("callback_data") == data:
                    return True
        return False

    def transcript(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "message_id": self.message_id,
            "chat_id": self.chat_id,
            "from_bot": self.from_bot,
            "user_id": self.sender["id"],
            "is_bot": bool(self.sender.get("is_bot")),
            "date": self.date,
            "text": self.text,
            "reply_markup": self.reply_markup,
            "reply_to_message_id": self.reply_to_message_id,
            "edits": self.edits,
            "edit_date": self.edit_date,
            "deleted": self.deleted,
        }
        if self.parse_mode is not None:
            entry["parse_mode"] = self.parse_mode
        if self.entities:
            entry["entities"] = self.entities
        entry.update(self.extra)
        return entry


@dataclass(slots=True)
class Chat:
    id: int
    type: str
    title: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1

    def as_dict(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id}
        if self.type == "private":
            chat["first_name"] = self.first_name or str(self.id)
            if self.last_name:
                chat["last_name"] = self.last_name
        else:
            chat["title"] = self.title or f"Group {self.id}"
        if self.username:
            chat["username"] = self.username
        chat["type"] = self.type
        return chat

    def message_dict(self, msg: StoredMessage, *, with_reply: bool = True) -> dict[str, Any]:
        """``msg`` as a Bot API Message object."""
        out: dict[str, Any] = {
            "message_id": msg.message_id,
            "from": msg.sender,
            "chat": self.as_dict(),
            "date": msg.date,
        }
        if with_reply and msg.reply_to_message_id is not None:
            replied = self.messages.get(msg.reply_to_message_id)
            if replied is not None and not replied.deleted:
                out["reply_to_message"] = self.message_dict(replied, with_reply=False)
        if msg.edit_date is not None:
            out["edit_date"] = msg.edit_date
        if msg.text is not None:
            out["text"] = msg.text
            if msg.entities:
                out["entities"] = msg.entities
        out.update(msg.extra)
        markup = msg.inline_markup()
        if markup is not None:
            out["reply_markup"] = markup
        return out


@dataclass(slots=True)
class CallbackRecord:
    id: str
    user_id: int
    chat_id: int
    message_id: int
    data: str
    created_at: float
    answered_at: float | None = None
    answer: dict[str, Any] | None = None


@dataclass(slots=True)
class WebhookConfig:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    ip_address: str | None = None
    has_custom_certificate: bool = False
    last_error_date: int | None = None
    last_error_message: str | None = None

    def same_as(self, other: WebhookConfig) -> bool:
        return (
            self.url == other.url
            and self.secret_token == other.secret_token
            and self.max_connections == other.max_connections
            and self.allowed_updates == other.allowed_updates
            and self.ip_address == other.ip_address
        )


@dataclass(slots=True)
class Stats:
    updates_created: int = 0
    updates_delivered: int = 0
    updates_redelivered: int = 0
    updates_expired: int = 0
    updates_filtered: int = 0
    conflicts_409: int = 0
    rate_limited_429: int = 0
    webhook_attempts: int = 0
    webhook_failures: int = 0
    webhook_in_flight: int = 0
    webhook_in_flight_max: int = 0
    messages_sent: int = 0
    messages_edited: int = 0
    messages_deleted: int = 0
    sends_dropped: int = 0
    getupdates_in_flight: int = 0
    getupdates_pollers_max: int = 0
    callbacks_created: int = 0
    callbacks_answered: int = 0
    callbacks_answered_twice: int = 0
    callbacks_answered_late: int = 0
    calls: Counter[str] = field(default_factory=Counter)

    def as_dict(self, pending: int) -> dict[str, Any]:
        return {
            "updates_created": self.updates_created,
            "updates_delivered": self.updates_delivered,
            "updates_redelivered": self.updates_redelivered,
            "updates_expired": self.updates_expired,
            "updates_filtered": self.updates_filtered,
            "updates_pending": pending,
            "conflicts_409": self.conflicts_409,
            "rate_limited_429": self.rate_limited_429,
            "webhook_attempts": self.webhook_attempts,
            "webhook_failures": self.webhook_failures,
            "webhook_in_flight_max": self.webhook_in_flight_max,
            "messages_sent": self.messages_sent,
            "messages_edited": self.messages_edited,
            "messages_deleted": self.messages_deleted,
            "sends_dropped": self.sends_dropped,
            "getupdates_in_flight": self.getupdates_in_flight,
            "getupdates_pollers_max": self.getupdates_pollers_max,
            "callbacks": {
                "created": self.callbacks_created,
                "answered": self.callbacks_answered,
                "unanswered": self.callbacks_created - self.callbacks_answered,
                "answered_twice": self.callbacks_answered_twice,
                "answered_late": self.callbacks_answered_late,
            },
            "calls": dict(self.calls),
        }


def parse_allowed_updates(value: Any) -> list[str]:
    """Telegram's reading of ``allowed_updates``: known names, any case, unknown skipped."""
    if not isinstance(value, list):
        raise ApiError(400, "Bad Request: can't parse allowed updates: an array expected")
    names: list[str] = []
    for item in value:
        if isinstance(item, str):
            name = item.strip().lower()
            if name in DEFAULT_UPDATE_TYPES or name in ALL_UPDATE_TYPES:
                if name not in names:
                    names.append(name)
    return names


class BotState:
    """Everything the emulator knows about one bot id."""

    def __init__(self, bot_id: int, clock: Clock, flood: FloodControl | None) -> None:
        self.bot_id = bot_id
        self.clock = clock
        self.flood = flood
        self.user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": f"Emulated Bot {bot_id}",
            "username": f"emu{bot_id}_bot",
        }
        self.pending: OrderedDict[int, Update] = OrderedDict()
        self.redeliver: dict[int, Update] = {}
        self.next_update_id = 1
        self.allowed: frozenset[str] = DEFAULT_UPDATE_TYPES
        self.allowed_list: list[str] | None = None
        self.chats: dict[int, Chat] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.callbacks: dict[str, CallbackRecord] = {}
        self.inline_queries: dict[str, float] = {}
        self.next_query_seq = 1
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.webhook: WebhookConfig | None = None
        self.webhook_log: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.stats = Stats()

    # -- updates ---------------------------------------------------------------

    def set_allowed_updates(self, names: list[str]) -> None:
        self.allowed_list = names or None
        self.allowed = frozenset(names) if names else DEFAULT_UPDATE_TYPES

    def add_update(self, kind: str, body: dict[str, Any], chat_key: int) -> Update | None:
        """Queue an update; ``None`` when ``allowed_updates`` filters its type out."""
        if kind not in self.allowed:
            self.stats.updates_filtered += 1
            return None
        update_id = self.next_update_id
        self.next_update_id += 1
        payload = {"update_id": update_id, kind: body}
        update = Update(update_id, kind, payload, self.clock(), chat_key)
        self.pending[update_id] = update
        self.stats.updates_created += 1
        return update

    def confirm(self, offset: int) -> None:
        """getUpdates ``offset``: forget updates below it; negative keeps only the last N."""
        pending = self.pending
        if offset > 0:
            while pending:
                first = next(iter(pending))
                if first >= offset:
                    break
                pending.popitem(last=False)
        elif offset < 0:
            keep = -offset
            while len(pending) > keep:
                pending.popitem(last=False)

    def take_batch(self, limit: int) -> list[Update]:
        """Up to ``limit`` unconfirmed updates, oldest first, dropping expired ones."""
        now = self.clock()
        batch: list[Update] = []
        expired: list[int] = []
        for update in self.pending.values():
            if update.expired(now):
                expired.append(update.update_id)
                continue
            batch.append(update)
            if len(batch) >= limit:
                break
        for update_id in expired:
            del self.pending[update_id]
        self.stats.updates_expired += len(expired)
        if self.redeliver:
            again = {u.update_id: u for u in self.redeliver.values() if not u.expired(now)}
            self.redeliver.clear()
            for update in batch:
                again.pop(update.update_id, None)
            if again:
                self.stats.updates_redelivered += len(again)
                batch = sorted([*batch, *again.values()], key=lambda u: u.update_id)[:limit]
        return batch

    def drop_pending(self) -> None:
        self.pending.clear()
        self.redeliver.clear()

    # -- chats and messages ----------------------------------------------------

    def ensure_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        is_bot: bool = False,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None:
            user = {"id": user_id, "is_bot": is_bot, "first_name": first_name or f"User {user_id}"}
            if not is_bot:
                user["language_code"] = language_code or "en"
            self.users[user_id] = user
        if first_name is not None:
            user["first_name"] = first_name
        if last_name is not None:
            user["last_name"] = last_name
        if username is not None:
            user["username"] = username
        if is_bot:
            user["is_bot"] = True
            user.pop("language_code", None)
        return user

    def ensure_chat(
        self, chat_id: int, *, user: dict[str, Any] | None = None, title: str | None = None
    ) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None:
            if chat_id > 0:
                first = user["first_name"] if user else None
                chat = Chat(
                    chat_id,
                    "private",
                    first_name=first,
                    last_name=user.get("last_name") if user else None,
                    username=user.get("username") if user else None,
                )
            else:
                kind = "supergroup" if chat_id <= -1_000_000_000_000 else "group"
                chat = Chat(chat_id, kind, title=title)
            self.chats[chat_id] = chat
        elif title is not None and chat.type != "private":
            chat.title = title
        return chat

    def add_message(
        self,
        chat: Chat,
        sender: dict[str, Any],
        *,
        from_bot: bool,
        text: str | None,
        entities: list[dict[str, Any]] | None = None,
        reply_markup: dict[str, Any] | None = None,
        reply_to_message_id: int | None = None,
        parse_mode: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> StoredMessage:
        msg = StoredMessage(
            message_id=chat.next_message_id,
            chat_id=chat.id,
            sender=sender,
            from_bot=from_bot,
            date=int(self.clock()),
            text=text,
            entities=entities or None,
            reply_markup=reply_markup,
            reply_to_message_id=reply_to_message_id,
            parse_mode=parse_mode,
            extra=extra or {},
        )
        chat.next_message_id += 1
        chat.messages[msg.message_id] = msg
        return msg

    def new_query_id(self) -> str:
        seq = self.next_query_seq
        self.next_query_seq += 1
        return str(4_000_000_000_000_000_000 + self.bot_id % 1_000_000 * 1_000_000_000 + seq)

    def transcript(self, chat_id: int) -> list[dict[str, Any]]:
        chat = self.chats.get(chat_id)
        if chat is None:
            return []
        return [msg.transcript() for msg in chat.messages.values()]

    def stats_dict(self) -> dict[str, Any]:
        return self.stats.as_dict(len(self.pending))
