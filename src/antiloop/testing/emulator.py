"""A local Telegram Bot API server for tests and benchmarks.

``Emulator`` serves ``/bot<token>/<method>`` on 127.0.0.1 the way api.telegram.org
does (see :mod:`antiloop.testing.methods` for the plain methods; getUpdates and the
webhook methods are here), plus control routes under ``/_emulator/`` through which
simulated people send messages and press buttons, and tests read transcripts, stats
and set faults. ``docs/testing.md`` describes every route and fault.

In-process::

    async with Emulator() as tg:
        token = Emulator.token_for(123)
        ...  # point a client at tg.base_url

As a process: ``antiloop emulator --port 8081`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import random
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from antiloop.testing.limits import FloodControl, RateLimits
from antiloop.testing.methods import FLOOD_METHODS, SYNC_METHODS, Params, UploadedFile
from antiloop.testing.state import (
    ALL_UPDATE_TYPES,
    ApiError,
    BotState,
    CallbackRecord,
    Clock,
    EmulatorError,
    Stats,
    Update,
    WebhookConfig,
    command_entities,
    parse_allowed_updates,
)
from antiloop.testing.webhook import WebhookDelivery, WebhookFaults

__all__ = ["Emulator", "Faults", "main"]

CONFLICT_POLL = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
CONFLICT_SET_WEBHOOK = "Conflict: terminated by setWebhook request"
LONG_POLL_MAX = 50.0
CONFLICT_INTERVAL = 3.0
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_TOKEN = re.compile(r"^([0-9]{1,20}):([A-Za-z0-9_-]{1,128})$")
_WEBHOOK_PORTS = (80, 88, 443, 8443)

_ASYNC_METHODS = (
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "logOut",
    "close",
)
_CANONICAL: dict[str, str] = {name.lower(): name for name in (*SYNC_METHODS, *_ASYNC_METHODS)}


@dataclass(frozen=True, slots=True)
class Faults:
    """Injected failures; ``Emulator.set_faults`` replaces the whole set."""

    redeliver: float = 0.0
    """Probability that a delivered getUpdates batch (or webhook update) is delivered again."""
    webhook_fail_first: int = 0
    """The first k attempts of each webhook delivery count as failed (500)."""
    latency_ms: float = 0.0
    """Delay added before every Bot API request."""
    drop_after_send: float = 0.0
    """Probability that a message-sending call is performed and then answered with 500."""
    seed: int | None = None
    """Seed of the random choices above (and of webhook backoff jitter)."""

    def __post_init__(self) -> None:
        for name in ("redeliver", "drop_after_send"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise EmulatorError(f"{name} is a probability: between 0 and 1, got {value!r}")
        if self.webhook_fail_first < 0 or self.latency_ms < 0:
            raise EmulatorError("webhook_fail_first and latency_ms cannot be negative")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Answer:
    """A successful answer with a ``description`` (setWebhook and friends)."""

    result: Any
    description: str


class _Poll:
    """One parked getUpdates request."""

    __slots__ = ("future", "request")

    def __init__(self, loop: asyncio.AbstractEventLoop, request: web.BaseRequest | None) -> None:
        self.future: asyncio.Future[str] = loop.create_future()
        self.request = request

    def gone(self) -> bool:
        """The client hung up (a killed process): nobody would receive an answer."""
        if self.request is None:
            return False
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def wake(self, reason: str) -> None:
        if not self.future.done():
            self.future.set_result(reason)


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
    )


def _error(code: int, description: str) -> web.Response:
    return _json_response({"ok": False, "error_code": code, "description": description}, code)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Emulator:
    """The Telegram Bot API, locally. Every bot id (the digits before ``:`` in a token)
    has its own state; any token of the form ``<digits>:<secret>`` is accepted.

    Args:
        host, port: where to listen; port 0 picks a free port.
        rate_limits: flood-control limits, ``True`` for Telegram-like defaults,
            ``False`` for none (benchmarks).
        time_scale: multiplies webhook retry delays, the webhook timeout and the 3 s
            between two 409 conflicts (``0.001`` runs Telegram's schedule in ms).
        answer_window: seconds (emulator clock) in which a callback query can be answered.
        webhook_timeout: seconds (times ``time_scale``) to wait for a webhook answer.
        clock: the emulator's clock (Unix seconds): message dates, retention, the answer
            window and flood control use it. A :class:`ManualClock` makes them testable
            without sleeping.
        faults: initial :class:`Faults`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate_limits: RateLimits | bool = True,
        time_scale: float = 1.0,
        answer_window: float = 15.0,
        webhook_timeout: float = 60.0,
        clock: Clock | None = None,
        faults: Faults | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.host = host
        self._requested_port = port
        if rate_limits is True:
            self._limits: RateLimits | None = RateLimits()
        elif rate_limits is False:
            self._limits = None
        else:
            self._limits = rate_limits
        self.time_scale = time_scale
        self._answer_window = answer_window
        self.webhook_timeout = webhook_timeout
        self.clock: Clock = clock if clock is not None else time.time
        self._faults = faults or Faults()
        self._rng = random.Random(self._faults.seed)
        self._bots: dict[int, BotState] = {}
        self._polls: dict[int, _Poll] = {}
        self._last_conflict: dict[int, float] = {}
        self._deliveries: dict[int, WebhookDelivery] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def token_for(bot_id: int) -> str:
        """A valid-looking token for ``bot_id``: ``"<bot_id>:AA..."`` (35 characters after ':')."""
        if bot_id <= 0:
            raise ValueError("a bot id is a positive integer")
        digest = hashlib.sha256(f"antiloop-emulator:{bot_id}".encode()).digest()
        secret = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return f"{bot_id}:AA{secret[:33]}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started: use `async with Emulator() as tg`")
        return self._port

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:54321``; requests go to ``{base_url}/bot{token}/{method}``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def answer_window(self) -> float:
        return self._answer_window

    @property
    def faults(self) -> Faults:
        return self._faults

    def now(self) -> float:
        return self.clock()

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_post("/_emulator/send", self._route_send)
        app.router.add_post("/_emulator/click", self._route_click)
        app.router.add_post("/_emulator/inline_query", self._route_inline_query)
        app.router.add_post("/_emulator/updates", self._route_inject)
        app.router.add_post("/_emulator/chats", self._route_create_chat)
        app.router.add_get("/_emulator/chats/{chat_id}/messages", self._route_messages)
        app.router.add_get("/_emulator/stats", self._route_stats)
        app.router.add_get("/_emulator/webhook_log", self._route_webhook_log)
        app.router.add_post("/_emulator/faults", self._route_set_faults)
        app.router.add_get("/_emulator/faults", self._route_get_faults)
        app.router.add_post("/_emulator/reset", self._route_reset)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=True
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for poll in self._polls.values():
            poll.wake("shutdown")
        deliveries = list(self._deliveries.values())
        self._deliveries.clear()
        for delivery in deliveries:
            await delivery.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ bots

    def _bot(self, bot_id: int) -> BotState:
        bot = self._bots.get(bot_id)
        if bot is None:
            flood = FloodControl(self._limits, self.clock) if self._limits else None
            bot = self._bots[bot_id] = BotState(bot_id, self.clock, flood)
        return bot

    def _resolve(self, bot_id: int | None) -> BotState:
        if bot_id is not None:
            return self._bot(bot_id)
        if len(self._bots) == 1:
            return next(iter(self._bots.values()))
        if not self._bots:
            raise EmulatorError(
                "bot_id is required: no bot has called the emulator yet, so there is no "
                "default; pass bot_id (the number before ':' in the token)"
            )
        seen = ", ".join(str(b) for b in sorted(self._bots))
        raise EmulatorError(f"bot_id is required: several bots have been seen ({seen})")

    def _peek(self, bot_id: int | None) -> BotState | None:
        if bot_id is None and not self._bots:
            return None
        if bot_id is not None:
            return self._bots.get(bot_id)
        return self._resolve(None)

    def _changed(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, set()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _new_update(self, bot: BotState, update: Update | None) -> None:
        if update is not None:
            delivery = self._deliveries.get(bot.bot_id)
            if delivery is not None:
                delivery.enqueue(update)
            else:
                poll = self._polls.get(bot.bot_id)
                if poll is not None:
                    poll.wake("update")
        self._changed()

    # ------------------------------------------------------------------ simulated people

    async def send(
        self,
        bot_id: int | None,
        user_id: int,
        text: str,
        chat_id: int | None = None,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        is_bot: bool = False,
        reply_to_message_id: int | None = None,
        chat_title: str | None = None,
    ) -> dict[str, Any]:
        """User ``user_id`` sends ``text`` to the bot, in its private chat (chat id = user
        id) or in group ``chat_id`` (negative). ``is_bot=True`` makes the sender a bot
        (to test bot-to-bot loops). Returns ``{"update_id", "message_id", "chat_id"}``;
        ``update_id`` is ``None`` when ``allowed_updates`` filters messages out.
        """
        if not isinstance(text, str) or not text:
            raise EmulatorError("text must be a non-empty string")
        bot = self._resolve(bot_id)
        chat_id = user_id if chat_id is None else chat_id
        if chat_id > 0 and chat_id != user_id:
            raise EmulatorError(
                f"chat {chat_id} is a private chat of user {chat_id}, not of user {user_id}; "
                "use a negative chat_id for a group"
            )
        if user_id == bot.bot_id:
            raise EmulatorError("the bot cannot send itself a message; use the Bot API")
        user = bot.ensure_user(
            user_id, first_name=first_name, last_name=last_name, username=username, is_bot=is_bot
        )
        chat = bot.ensure_chat(chat_id, user=user, title=chat_title)
        if reply_to_message_id is not None:
            target = chat.messages.get(reply_to_message_id)
            if target is None or target.deleted:
                raise EmulatorError(f"message {reply_to_message_id} not found in chat {chat_id}")
        msg = bot.add_message(
            chat,
            user,
            from_bot=False,
            text=text,
            entities=command_entities(text),
            reply_to_message_id=reply_to_message_id,
        )
        update = bot.add_update("message", chat.message_dict(msg), chat.id)
        self._new_update(bot, update)
        return {
            "update_id": update.update_id if update else None,
            "message_id": msg.message_id,
            "chat_id": chat.id,
        }

    async def click(
        self,
        bot_id: int | None,
        user_id: int,
        message_id: int,
        data: str,
        chat_id: int | None = None,
    ) -> dict[str, Any]:
        """User ``user_id`` presses the inline button with ``callback_data == data`` on bot
        message ``message_id``. Returns ``{"update_id", "callback_query_id"}``.
        Raises :class:`EmulatorError` if that message has no such button.
        """
        bot = self._resolve(bot_id)
        chat_id = user_id if chat_id is None else chat_id
        chat = bot.chats.get(chat_id)
        if chat is None:
            raise EmulatorError(f"chat {chat_id} not found (bot {bot.bot_id})")
        msg = chat.messages.get(message_id)
        if msg is None or msg.deleted:
            raise EmulatorError(f"message {message_id} not found in chat {chat_id}")
        if not msg.from_bot or not msg.has_callback_button(data):
            raise EmulatorError(
                f"message {message_id} in chat {chat_id} has no inline button with "
                f"callback_data {data!r}"
            )
        user = bot.ensure_user(user_id)
        query_id = bot.new_query_id()
        digest = hashlib.sha256(f"{bot.bot_id}:{chat_id}".encode()).hexdigest()
        body = {
            "id": query_id,
            "from": user,
            "message": chat.message_dict(msg),
            "chat_instance": str(int(digest[:15], 16) - (1 << 59)),
            "data": data,
        }
        bot.callbacks[query_id] = CallbackRecord(
            query_id, user_id, chat_id, message_id, data, self.clock()
        )
        bot.stats.callbacks_created += 1
        update = bot.add_update("callback_query", body, chat.id)
        self._new_update(bot, update)
        return {"update_id": update.update_id if update else None, "callback_query_id": query_id}

    async def inline_query(self, bot_id: int | None, user_id: int, query: str) -> dict[str, Any]:
        """User ``user_id`` types ``@bot query``. Returns ``{"update_id", "inline_query_id"}``."""
        bot = self._resolve(bot_id)
        user = bot.ensure_user(user_id)
        query_id = bot.new_query_id()
        bot.inline_queries[query_id] = self.clock()
        body = {"id": query_id, "from": user, "query": query, "offset": "", "chat_type": "sender"}
        update = bot.add_update("inline_query", body, user_id)
        self._new_update(bot, update)
        return {"update_id": update.update_id if update else None, "inline_query_id": query_id}

    async def inject(self, bot_id: int | None, update: dict[str, Any]) -> int | None:
        """Queue a raw update body such as ``{"edited_message": {...}}`` (no ``update_id``:
        the emulator numbers it). Nothing is validated: use it for malformed updates."""
        bot = self._resolve(bot_id)
        kinds = [key for key in update if key != "update_id"]
        if len(kinds) != 1:
            raise EmulatorError("an update has exactly one field besides update_id")
        kind = kinds[0]
        body = update[kind]
        chat_key = 0
        if isinstance(body, dict):
            chat = body.get("chat") or (body.get("message") or {}).get("chat")
            sender = body.get("from") or body.get("user")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                chat_key = chat["id"]
            elif isinstance(sender, dict) and isinstance(sender.get("id"), int):
                chat_key = sender["id"]
        if kind not in ALL_UPDATE_TYPES:  # unknown types bypass allowed_updates
            saved = bot.allowed
            bot.allowed = saved | {kind}
            try:
                queued = bot.add_update(kind, body, chat_key)
            finally:
                bot.allowed = saved
        else:
            queued = bot.add_update(kind, body, chat_key)
        self._new_update(bot, queued)
        return queued.update_id if queued else None

    def create_chat(
        self,
        bot_id: int | None,
        chat_id: int,
        *,
        title: str | None = None,
        first_name: str | None = None,
        username: str | None = None,
    ) -> dict[str, Any]:
        """Make a chat known to the bot without a message in it (Bot API getChat shape)."""
        bot = self._resolve(bot_id)
        user = None
        if chat_id > 0:
            user = bot.ensure_user(chat_id, first_name=first_name, username=username)
        chat = bot.ensure_chat(chat_id, user=user, title=title)
        if username and chat.type != "private":
            chat.username = username
        self._changed()
        return chat.as_dict()

    def set_next_update_id(self, bot_id: int | None, update_id: int) -> None:
        """Make the next update of a bot get ``update_id`` (Telegram jumps after a quiet week)."""
        if update_id <= 0:
            raise EmulatorError("update ids are positive")
        self._resolve(bot_id).next_update_id = update_id

    def messages(self, chat_id: int, bot_id: int | None = None) -> list[dict[str, Any]]:
        """The transcript of a chat, oldest first: user and bot messages, with ``edits`` and
        ``deleted``. An unknown chat has an empty transcript."""
        bot = self._peek(bot_id)
        return bot.transcript(chat_id) if bot is not None else []

    def callback_answer(
        self, callback_query_id: str, bot_id: int | None = None
    ) -> dict[str, Any] | None:
        """How the bot answered a callback query (``text``, ``show_alert``, ...), or None."""
        bot = self._peek(bot_id)
        record = bot.callbacks.get(callback_query_id) if bot is not None else None
        return dict(record.answer) if record is not None and record.answer is not None else None

    def stats(self, bot_id: int | None = None) -> dict[str, Any]:
        """Counters of one bot (see ``docs/testing.md``); zeros before any bot is seen."""
        bot = self._peek(bot_id)
        if bot is None:
            return Stats().as_dict(0)
        return bot.stats_dict()

    def webhook_log(self, bot_id: int | None = None) -> list[dict[str, Any]]:
        """Every webhook attempt: ``update_id``, ``attempt``, ``ok``, ``status``, ``error``,
        ``next_delay`` (seconds before the retry, unscaled)."""
        bot = self._peek(bot_id)
        return [dict(entry) for entry in bot.webhook_log] if bot is not None else []

    def set_faults(
        self,
        *,
        redeliver: float = 0.0,
        webhook_fail_first: int = 0,
        latency_ms: float = 0.0,
        drop_after_send: float = 0.0,
        seed: int | None = None,
    ) -> Faults:
        """Replace the fault set (arguments left out are off)."""
        self._faults = Faults(
            redeliver=redeliver,
            webhook_fail_first=webhook_fail_first,
            latency_ms=latency_ms,
            drop_after_send=drop_after_send,
            seed=seed,
        )
        self._rng = random.Random(seed)
        return self._faults

    def reset(self) -> None:
        """Forget every bot, chat, update, webhook, counter and fault."""
        for poll in self._polls.values():
            poll.wake("reset")
        for delivery in self._deliveries.values():
            delivery.cancel()
        self._deliveries.clear()
        self._polls.clear()
        self._last_conflict.clear()
        self._bots.clear()
        self.set_faults()
        self._changed()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; it is checked after every change (a Bot API
        call, a webhook attempt, a control call). Raises ``TimeoutError`` after ``within``
        seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {within} s")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)

    async def wait_for_messages(
        self, chat_id: int, count: int = 1, *, bot_id: int | None = None, within: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until the bot has sent at least ``count`` (not deleted) messages to
        ``chat_id``; returns them, oldest first."""

        def bot_messages() -> list[dict[str, Any]]:
            return [m for m in self.messages(chat_id, bot_id) if m["from_bot"] and not m["deleted"]]

        try:
            await self.wait_for(lambda: len(bot_messages()) >= count, within)
        except TimeoutError:
            got = bot_messages()
            raise TimeoutError(
                f"expected {count} bot message(s) in chat {chat_id} within {within} s, "
                f"got {len(got)}: {[m['text'] for m in got]!r}"
            ) from None
        return bot_messages()

    # ------------------------------------------------------------------ Bot API

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        latency = self._faults.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000.0)
        match = _TOKEN.match(request.match_info["token"])
        if match is None or int(match.group(1)) == 0:
            return _error(401, "Unauthorized")
        method = _CANONICAL.get(request.match_info["method"].lower())
        if method is None:
            return _error(404, "Not Found")
        bot = self._bot(int(match.group(1)))
        bot.stats.calls[method] += 1
        try:
            try:
                params = Params(await _read_params(request))
            except ConnectionError:  # the client hung up mid-request (a killed process)
                return _error(400, "Bad Request: the request was not received whole")
            result = await self._call(bot, method, params, request)
        except ApiError as exc:
            return _json_response(exc.as_dict(), exc.code)
        finally:
            self._changed()
        if method in FLOOD_METHODS:
            drop = self._faults.drop_after_send
            if drop and self._rng.random() < drop:
                bot.stats.sends_dropped += 1
                return _error(500, "Internal Server Error")
        if isinstance(result, _Answer):
            return _json_response(
                {"ok": True, "result": result.result, "description": result.description}
            )
        return _json_response({"ok": True, "result": result})

    async def _call(self, bot: BotState, method: str, params: Params,
                    request: web.BaseRequest | None = None) -> Any:
        sync = SYNC_METHODS.get(method)
        if sync is not None:
            return sync(self, bot, params)
        if method == "getUpdates":
            return await self._get_updates(bot, params, request)
        if method == "setWebhook":
            return await self._set_webhook(bot, params)
        if method == "deleteWebhook":
            return await self._delete_webhook(bot, params)
        if method == "getWebhookInfo":
            return self._webhook_info(bot)
        return True  # logOut, close

    async def _run_reply_method(self, bot: BotState, name: str, params: dict[str, Any]) -> None:
        """A method call in a webhook answer's body."""
        method = _CANONICAL.get(name.lower())
        sync = SYNC_METHODS.get(method) if method else None
        if method is None or sync is None:
            return
        bot.stats.calls[method] += 1
        with contextlib.suppress(ApiError):
            sync(self, bot, Params(params))

    def _deliver_batch(self, bot: BotState, batch: list[Update]) -> list[dict[str, Any]]:
        bot.stats.updates_delivered += len(batch)
        redeliver = self._faults.redeliver
        if batch and redeliver and self._rng.random() < redeliver:
            for update in batch:
                bot.redeliver[update.update_id] = update
        return [update.payload for update in batch]

    async def _get_updates(self, bot: BotState, params: Params,
                           request: web.BaseRequest | None = None) -> list[dict[str, Any]]:
        if bot.webhook is not None:
            raise ApiError(409, CONFLICT_WEBHOOK)
        offset = params.get_int("offset", 0) or 0
        limit = params.get_int("limit", 100)
        limit = 100 if limit is None else min(100, max(1, limit))
        timeout = min(LONG_POLL_MAX, max(0.0, params.get_float("timeout", 0.0)))
        if "allowed_updates" in params:
            bot.set_allowed_updates(parse_allowed_updates(params.get_json("allowed_updates")))
        stats = bot.stats
        stats.getupdates_in_flight += 1
        parked = self._polls.get(bot.bot_id)
        if parked is not None and parked.gone():
            # The parked poll belongs to a client that hung up (a killed process): Telegram has
            # nobody to answer, so it is neither a concurrent poller nor a 409.
            parked.wake("gone")
            if self._polls.get(bot.bot_id) is parked:
                del self._polls[bot.bot_id]
            live = stats.getupdates_in_flight - 1
        else:
            live = stats.getupdates_in_flight
        stats.getupdates_pollers_max = max(stats.getupdates_pollers_max, live)
        poll: _Poll | None = None
        try:
            bot.confirm(offset)
            batch = bot.take_batch(limit)
            if batch or timeout <= 0:
                return self._deliver_batch(bot, batch)
            loop = asyncio.get_running_loop()
            poll = _Poll(loop, request)
            previous = self._polls.get(bot.bot_id)
            self._polls[bot.bot_id] = poll
            if previous is not None:
                previous.wake("conflict")
            self._changed()  # a poll is parked: tests may be waiting for that
            deadline = loop.time() + timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return self._deliver_batch(bot, [])
                try:
                    async with asyncio.timeout(remaining):
                        reason = await poll.future
                except TimeoutError:
                    return self._deliver_batch(bot, [])
                if reason == "update":
                    batch = bot.take_batch(limit)
                    if batch:
                        return self._deliver_batch(bot, batch)
                    poll.future = loop.create_future()
                    continue
                if reason == "conflict":
                    await self._conflict_pause(bot, loop)
                    stats.conflicts_409 += 1
                    raise ApiError(409, CONFLICT_POLL)
                if reason == "webhook":
                    stats.conflicts_409 += 1
                    raise ApiError(409, CONFLICT_SET_WEBHOOK)
                return []  # shutdown or reset
        finally:
            stats.getupdates_in_flight -= 1
            if poll is not None and self._polls.get(bot.bot_id) is poll:
                del self._polls[bot.bot_id]

    async def _conflict_pause(self, bot: BotState, loop: asyncio.AbstractEventLoop) -> None:
        """Telegram answers at most one 409 conflict every 3 s per bot; later ones wait."""
        now = loop.time()
        interval = CONFLICT_INTERVAL * self.time_scale
        at = max(now, self._last_conflict.get(bot.bot_id, now - interval) + interval)
        self._last_conflict[bot.bot_id] = at
        if at > now:
            await asyncio.sleep(at - now)

    def _validate_webhook_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port
        except ValueError:
            raise ApiError(400, "Bad Request: invalid webhook URL specified") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ApiError(400, "Bad Request: invalid webhook URL specified")
        if _is_loopback(host):
            return  # tests: any scheme and port on loopback
        if parts.scheme != "https":
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        if port is not None and port not in _WEBHOOK_PORTS:
            raise ApiError(
                400,
                "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
            )

    async def _set_webhook(self, bot: BotState, params: Params) -> _Answer:
        url = (params.get_str("url") or "").strip()
        if not url:
            return await self._delete_webhook(bot, params)
        self._validate_webhook_url(url)
        secret = params.get_str("secret_token") or None
        if secret is not None and not _SECRET.match(secret):
            if len(secret) > 256:
                raise ApiError(400, "Bad Request: secret token is too long")
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        max_connections = params.get_int("max_connections")
        if max_connections is None:
            max_connections = 40
        if not 1 <= max_connections <= 100:
            raise ApiError(400, "Bad Request: max_connections must be between 1 and 100")
        if "allowed_updates" in params:
            bot.set_allowed_updates(parse_allowed_updates(params.get_json("allowed_updates")))
        config = WebhookConfig(
            url=url,
            secret_token=secret,
            max_connections=max_connections,
            allowed_updates=bot.allowed_list,
            ip_address=params.get_str("ip_address") or None,
            has_custom_certificate=params.get_file("certificate") is not None,
        )
        drop = params.get_bool("drop_pending_updates")
        if drop:
            bot.drop_pending()
        poll = self._polls.get(bot.bot_id)
        if poll is not None:
            poll.wake("webhook")
        current = self._deliveries.get(bot.bot_id)
        if bot.webhook is not None and bot.webhook.same_as(config) and current is not None:
            if drop:
                current.drop()
            return _Answer(True, "Webhook is already set")
        if current is not None:
            del self._deliveries[bot.bot_id]
            await current.close()
        bot.webhook = config
        assert self._session is not None
        self._deliveries[bot.bot_id] = WebhookDelivery(
            bot,
            config,
            self._session,
            time_scale=self.time_scale,
            timeout=self.webhook_timeout,
            faults=lambda: WebhookFaults(self._faults.webhook_fail_first, self._faults.redeliver),
            rng=lambda: self._rng,
            on_change=self._changed,
            run_method=self._run_reply_method,
        )
        return _Answer(True, "Webhook was set")

    async def _delete_webhook(self, bot: BotState, params: Params) -> _Answer:
        if params.get_bool("drop_pending_updates"):
            bot.drop_pending()
        delivery = self._deliveries.pop(bot.bot_id, None)
        if delivery is not None:
            await delivery.close()
        if bot.webhook is None:
            return _Answer(True, "Webhook is already deleted")
        bot.webhook = None
        return _Answer(True, "Webhook was deleted")

    def _webhook_info(self, bot: BotState) -> dict[str, Any]:
        config = bot.webhook
        info: dict[str, Any] = {
            "url": config.url if config else "",
            "has_custom_certificate": config.has_custom_certificate if config else False,
            "pending_update_count": len(bot.pending),
        }
        if config is not None:
            if config.ip_address:
                info["ip_address"] = config.ip_address
            if config.last_error_date is not None:
                info["last_error_date"] = config.last_error_date
                info["last_error_message"] = config.last_error_message
            info["max_connections"] = config.max_connections
            if config.allowed_updates:
                info["allowed_updates"] = list(config.allowed_updates)
        return info

    async def _handle_not_found(self, request: web.Request) -> web.StreamResponse:
        return _error(404, "Not Found")

    # ------------------------------------------------------------------ control routes

    async def _route_send(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            return await self.send(
                _opt_int(body, "bot_id"),
                _req_int(body, "user_id"),
                _req_str(body, "text"),
                _opt_int(body, "chat_id"),
                first_name=_opt_str(body, "first_name"),
                last_name=_opt_str(body, "last_name"),
                username=_opt_str(body, "username"),
                is_bot=bool(body.get("is_bot") or body.get("from_bot")),
                reply_to_message_id=_opt_int(body, "reply_to_message_id"),
                chat_title=_opt_str(body, "chat_title") or _opt_str(body, "title"),
            )

        return await _control(request, run)

    async def _route_click(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            return await self.click(
                _opt_int(body, "bot_id"),
                _req_int(body, "user_id"),
                _req_int(body, "message_id"),
                _req_str(body, "data"),
                _opt_int(body, "chat_id"),
            )

        return await _control(request, run)

    async def _route_inline_query(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            query = body.get("query", "")
            if not isinstance(query, str):
                raise EmulatorError("query must be a string")
            return await self.inline_query(
                _opt_int(body, "bot_id"), _req_int(body, "user_id"), query
            )

        return await _control(request, run)

    async def _route_inject(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            update = body.get("update")
            if not isinstance(update, dict):
                raise EmulatorError('update must be an object such as {"message": {...}}')
            return {"update_id": await self.inject(_opt_int(body, "bot_id"), update)}

        return await _control(request, run)

    async def _route_create_chat(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            return self.create_chat(
                _opt_int(body, "bot_id"),
                _req_int(body, "chat_id"),
                title=_opt_str(body, "title"),
                first_name=_opt_str(body, "first_name"),
                username=_opt_str(body, "username"),
            )

        return await _control(request, run)

    async def _route_messages(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            chat_id = _parse_int(request.match_info["chat_id"], "chat_id")
            return {"messages": self.messages(chat_id, _query_bot_id(request))}

        return await _control(request, run, read_body=False)

    async def _route_stats(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            return self.stats(_query_bot_id(request))

        return await _control(request, run, read_body=False)

    async def _route_webhook_log(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            return {"attempts": self.webhook_log(_query_bot_id(request))}

        return await _control(request, run, read_body=False)

    async def _route_set_faults(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            known = {"redeliver", "webhook_fail_first", "latency_ms", "drop_after_send", "seed"}
            unknown = sorted(set(body) - known)
            if unknown:
                raise EmulatorError(f"unknown fault(s) {unknown}; known: {sorted(known)}")
            try:
                faults = self.set_faults(
                    redeliver=float(body.get("redeliver", 0.0)),
                    webhook_fail_first=int(body.get("webhook_fail_first", 0)),
                    latency_ms=float(body.get("latency_ms", 0.0)),
                    drop_after_send=float(body.get("drop_after_send", 0.0)),
                    seed=_opt_int(body, "seed"),
                )
            except (TypeError, ValueError) as exc:
                raise EmulatorError(str(exc)) from None
            return faults.as_dict()

        return await _control(request, run)

    async def _route_get_faults(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            return self._faults.as_dict()

        return await _control(request, run, read_body=False)

    async def _route_reset(self, request: web.Request) -> web.StreamResponse:
        async def run(body: dict[str, Any]) -> Any:
            self.reset()
            return {"ok": True}

        return await _control(request, run, read_body=False)


# ---------------------------------------------------------------------- request helpers


async def _read_params(request: web.Request) -> dict[str, Any]:
    data: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return data
    ctype = request.content_type
    if ctype == "application/json":
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
            if isinstance(body, dict):
                data.update(body)
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                stream = value.file
                stream.seek(0, 2)
                size = stream.tell()
                data[key] = UploadedFile(key, value.filename, value.content_type, size)
            else:
                data[key] = value
    return data


async def _control(
    request: web.Request,
    run: Callable[[dict[str, Any]], Awaitable[Any]],
    *,
    read_body: bool = True,
) -> web.StreamResponse:
    body: dict[str, Any] = {}
    if read_body and request.body_exists:
        try:
            parsed = await request.json()
        except ValueError:
            return _error(400, "the body must be a JSON object")
        if not isinstance(parsed, dict):
            return _error(400, "the body must be a JSON object")
        body = parsed
    try:
        result = await run(body)
    except EmulatorError as exc:
        return _error(400, str(exc))
    return _json_response(result)


def _parse_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise EmulatorError(f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise EmulatorError(f"{name} must be an integer, got {value!r}")


def _req_int(body: dict[str, Any], name: str) -> int:
    if body.get(name) is None:
        raise EmulatorError(f"{name} is required")
    return _parse_int(body[name], name)


def _opt_int(body: dict[str, Any], name: str) -> int | None:
    return None if body.get(name) is None else _parse_int(body[name], name)


def _req_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise EmulatorError(f"{name} is required and must be a string")
    return value


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise EmulatorError(f"{name} must be a string")
    return value


def _query_bot_id(request: web.Request) -> int | None:
    value = request.query.get("bot_id")
    return None if value in (None, "") else _parse_int(value, "bot_id")


# ---------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="antiloop emulator",
        description="A local Telegram Bot API server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (8081; 0 picks a free one)")
    parser.add_argument("--no-rate-limit", action="store_true", help="turn flood control (429) off")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply webhook retry delays and timeouts by this (e.g. 0.001)",
    )
    parser.add_argument(
        "--answer-window",
        type=float,
        default=15.0,
        help="seconds in which a callback query can be answered (15)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    emulator = Emulator(
        args.host,
        args.port,
        rate_limits=not args.no_rate_limit,
        time_scale=args.time_scale,
        answer_window=args.answer_window,
    )
    async with emulator:
        print(f"antiloop emulator listening on {emulator.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """``antiloop emulator [--host H] [--port P] [--no-rate-limit] [--time-scale S]
    [--answer-window W]``: serve until SIGINT or SIGTERM, then exit 0."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    if args.time_scale <= 0:
        print("antiloop emulator: --time-scale must be positive", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(
            f"antiloop emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
