"""The Context a handler receives: the update, who sent it, and replay-safe ways to answer."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import updates as U
from .errors import BadRequest, TelegramError
from .outbox import ANSWER_KEY

if TYPE_CHECKING:
    from .outbox import Outbox
    from .store.base import Store

log = logging.getLogger("antiloop.context")


class Context:
    """What a handler gets for one update.

    Every Bot API call made through it goes through the :class:`~antiloop.outbox.Outbox`:
    numbered (the n-th call while handling this update is ordinal n) and recorded, so when the
    update is handled again after a crash, the calls already made are skipped and their recorded
    results returned.
    """

    def __init__(
        self,
        update: dict[str, Any],
        *,
        bot_id: int,
        outbox: Outbox,
        store: Store,
        attempt: int = 1,
        bot_username: str | None = None,
        replayed: dict[int, Any] | None = None,
    ) -> None:
        self.update = update
        self.bot_id = bot_id
        self.update_id: int = int(update.get("update_id", 0))
        p = U.Parsed(update)
        self.update_type = p.kind
        self.attempt = attempt
        self.bot_username = bot_username
        self.store = store
        self.outbox = outbox
        self.chat_id = p.chat_id
        self.user_id = p.user_id
        self.user = p.user
        self.text = p.text
        self.data = p.data
        self.message: dict[str, Any] | None = p.message
        self.message_id: int | None = p.message_id
        self.args: list[str] = []
        self.match: dict[str, str] = {}
        self.callback_query_id: str | None = p.callback_query_id
        self.inline_message_id: str | None = p.inline_message_id
        self._ordinal = 0
        self.pending_records: list[tuple[int, Any, asyncio.Future[Any]]] = []
        """Calls made and not yet durably recorded (the outbox settles them)."""
        self._replayed = replayed if replayed is not None else {}
        self.answered = ANSWER_KEY in self._replayed  # answered by an earlier attempt
        self.answer_count = 0
        self.extra: dict[str, Any] = {}

    def __repr__(self) -> str:
        return (f"Context(update_id={self.update_id}, type={self.update_type}, "
                f"chat_id={self.chat_id}, user_id={self.user_id})")

    @property
    def is_callback(self) -> bool:
        return self.callback_query_id is not None

    @property
    def from_bot(self) -> bool:
        """The sender is a bot (Telegram marks it ``is_bot``)."""
        return bool(self.user and self.user.get("is_bot") is True)

    def next_ordinal(self) -> int:
        self._ordinal += 1
        return self._ordinal

    def replayed_result(self, ordinal: int) -> tuple[bool, Any]:
        if ordinal in self._replayed:
            return True, self._replayed[ordinal]
        return False, None

    async def call(self, method: str, *, allow_repeat: bool = False, **params: Any) -> Any:
        """Any Bot API method, through the outbox."""
        return await self.outbox.call(self, method, params, allow_repeat=allow_repeat)

    async def send(self, chat_id: int | str, text: str, **params: Any) -> Any:
        """``sendMessage`` to any chat."""
        return await self.call("sendMessage", chat_id=chat_id, text=text, **params)

    async def reply(self, text: str, **params: Any) -> Any:
        """``sendMessage`` to the chat this update came from."""
        if self.chat_id is None:
            raise ValueError(f"update {self.update_id} ({self.update_type}) has no chat to reply to")
        return await self.send(self.chat_id, text, **params)

    async def answer(self, text: str | None = None, show_alert: bool = False, **params: Any) -> Any:
        """Answer the callback query, exactly once: a second call is a logged no-op.

        The answer is recorded under a fixed ledger key, so a re-run of this update (after a
        crash or a failed attempt) never answers again, whenever the first answer was made.
        A query Telegram calls too old (400) is logged and counts as answered.
        """
        if self.callback_query_id is None:
            raise ValueError(f"update {self.update_id} ({self.update_type}) is not a callback query")
        if self.answered:
            log.info("callback %s of update %s already answered; second answer skipped",
                     self.callback_query_id, self.update_id)
            return True
        self.answered = True
        self.answer_count += 1
        body = {"callback_query_id": self.callback_query_id, "text": text,
                "show_alert": show_alert or None, **params}
        try:
            return await self.outbox.call(self, "answerCallbackQuery", body, key=ANSWER_KEY)
        except BadRequest as exc:
            log.warning("callback %s of update %s could not be answered: %s",
                        self.callback_query_id, self.update_id, exc.description)
            return False
        except TelegramError as exc:
            if exc.error_code:  # Telegram refused it: not answered, a later answer may try
                self.answered = False
            raise  # after a timeout it may have been answered: never risk a second answer

    async def edit_text(self, text: str, **params: Any) -> Any:
        """``editMessageText`` of the message this update is about (the one a button was on).

        When the message already reads ``text`` (Telegram's 400 "message is not modified", e.g.
        a second press of the same button), that is success: ``True`` is returned.
        """
        if self.chat_id is not None and self.message_id is not None:
            where: dict[str, Any] = {"chat_id": self.chat_id, "message_id": self.message_id}
        elif self.inline_message_id is not None:
            where = {"inline_message_id": self.inline_message_id}
        else:
            raise ValueError(f"update {self.update_id} ({self.update_type}) has no message to edit")
        try:
            return await self.call("editMessageText", **where, text=text, **params)
        except BadRequest as exc:
            if "not modified" not in exc.description:
                raise
            log.debug("update %s: message %s already shows this text", self.update_id, where)
            return True

    async def finish(self) -> None:
        """Called by the runtime when the handler returned: a callback never left spinning."""
        if self.callback_query_id is not None and not self.answered:
            await self.answer()


def press_key(ctx: Context) -> str:
    """The debounce key of a button press: (user, chat, message, data), never ids, since a
    client that got no answer re-sends the press with a new update_id and callback id."""
    target = ctx.message_id if ctx.message_id is not None else ctx.inline_message_id
    return f"cb:{ctx.user_id}:{ctx.chat_id}:{target}:{ctx.data}"
