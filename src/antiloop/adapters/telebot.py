"""pyTelegramBotAPI 4: ``antiloop run bot.py:bot`` (a ``telebot.TeleBot`` or an
``telebot.async_telebot.AsyncTeleBot``).

antiloop feeds the bot (``process_new_updates([Update.de_json(update)])``); it never polls.

pyTelegramBotAPI has no per-bot transport, only module globals, so while an adapter is running:

* sync ``TeleBot``: ``telebot._apihelper.CUSTOM_REQUEST_SENDER`` is antiloop's sender. The bot
  runs with ``threaded=False`` semantics, in a thread pool of the adapter's own, one update per
  call; the sender hands each call to antiloop's event loop.
* ``AsyncTeleBot``: ``telebot._aio._process_request`` is antiloop's.

Calls with another token (another bot in the same process) and calls made outside antiloop go
to whatever was installed before (restored by :meth:`aclose`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import requests
import telebot
from telebot import apihelper, asyncio_helper
from telebot.async_telebot import AsyncTeleBot
from telebot.async_telebot import ExceptionHandler as AsyncExceptionHandler

from ..errors import TelegramError
from ._common import (
    DEFAULT_DEBOUNCE,
    FrameworkAdapter,
    Scope,
    current_scope,
    decode_json_fields,
    error_json,
    ledgered,
    record_error,
    route_call,
)

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("antiloop.adapters.telebot")

# pyTelegramBotAPI is mostly untyped: its module globals are used through Any.
_apihelper: Any = apihelper
_aio: Any = asyncio_helper
_Update: Any = telebot.types.Update


class _Response:
    """What ``apihelper._check_result`` reads from a ``requests.Response``."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self.text = json.dumps(body)
        self.content = self.text.encode()
        self.reason = "OK" if status_code == 200 else "Error"

    def json(self) -> Any:
        return json.loads(self.text)


def _method_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


class _ExceptionRecorder(telebot.ExceptionHandler):
    """Wraps the bot's ``exception_handler``: a handler exception the user's handler does not
    declare handled is recorded, and re-raised by antiloop after dispatch."""

    def __init__(self, theirs: Any) -> None:
        self.theirs = theirs

    def handle(self, exception: Exception) -> bool:
        if self.theirs is not None and self.theirs.handle(exception):
            return True
        return record_error(exception)


class _AsyncExceptionRecorder(AsyncExceptionHandler):
    def __init__(self, theirs: Any) -> None:
        self.theirs = theirs

    async def handle(self, exception: Exception) -> bool:  # type: ignore[override]
        if self.theirs is not None:
            verdict = self.theirs.handle(exception)
            if asyncio.iscoroutine(verdict):
                verdict = await verdict
            if verdict:
                return True
        return record_error(exception)


async def _call(scope: Scope, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        result = await route_call(scope, method, decode_json_fields(params))
    except TelegramError as exc:
        if not exc.error_code:
            raise
        return exc.error_code, error_json(exc)
    return 200, {"ok": True, "result": result}


class TeleBotAdapter(FrameworkAdapter):
    """Runs a synchronous ``telebot.TeleBot`` under antiloop."""

    framework = "pyTelegramBotAPI"

    def __init__(self, bot: telebot.TeleBot, *, debounce: float = DEFAULT_DEBOUNCE,
                 threads: int = 16) -> None:
        super().__init__(debounce=debounce)
        self.bot = bot
        self.threads = threads
        bot.threaded = False  # handlers run in our thread, so antiloop sees their outcome
        bot.exception_handler = _ExceptionRecorder(bot.exception_handler)
        self._previous: Any = None
        self._sender = self._send  # one bound method, so "is it still ours" can be asked
        self._installed = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _send(self, method: str, url: str, params: dict[str, Any] | None = None,
              files: Any = None, timeout: Any = None, proxies: Any = None) -> Any:
        """``CUSTOM_REQUEST_SENDER``: runs in the handler's thread."""
        scope = current_scope()
        mine = self.bot.token in url
        if scope is None and mine and self.outbox is not None and self._loop is not None:
            scope = Scope(None, self.outbox, self._loop)
        if scope is None or not mine:
            return self._fallback(method, url, params, files, timeout, proxies)
        name = _method_of(url)
        if files:
            def perform_sync() -> tuple[bool, Any]:
                resp = self._fallback(method, url, params, files, timeout, proxies)
                try:
                    body = resp.json()
                except ValueError:
                    return False, resp
                return (True, body.get("result")) if body.get("ok") else (False, resp)

            async def perform() -> tuple[bool, Any]:
                return await asyncio.to_thread(perform_sync)

            future = asyncio.run_coroutine_threadsafe(
                ledgered(scope.ctx, name, perform), scope.loop)
            ok, result = future.result()
            return _Response(200, {"ok": True, "result": result}) if ok else result
        future2 = asyncio.run_coroutine_threadsafe(
            _call(scope, name, dict(params or {})), scope.loop)
        try:
            status, body = future2.result()
        except TelegramError as exc:  # no answer (the call may have been made)
            raise requests.exceptions.ConnectionError(exc.description) from exc
        return _Response(status, body)

    def _fallback(self, method: str, url: str, params: Any, files: Any, timeout: Any,
                  proxies: Any) -> Any:
        if self._previous is not None:
            return self._previous(method, url, params=params, files=files, timeout=timeout,
                                  proxies=proxies)
        return _apihelper._get_req_session().request(method, url, params=params, files=files,
                                                    timeout=timeout, proxies=proxies)

    async def _start(self, ctx: Context) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix="antiloop-telebot")
        if _apihelper.CUSTOM_REQUEST_SENDER is not self._sender:
            self._previous = _apihelper.CUSTOM_REQUEST_SENDER
            _apihelper.CUSTOM_REQUEST_SENDER = self._sender
            self._installed = True

    async def _dispatch(self, ctx: Context) -> None:
        update = _Update.de_json(ctx.update)
        assert self._loop is not None
        run = contextvars.copy_context().run
        await self._loop.run_in_executor(self._pool, run, self.bot.process_new_updates, [update])

    async def _stop(self) -> None:
        if self._installed and _apihelper.CUSTOM_REQUEST_SENDER is self._sender:
            _apihelper.CUSTOM_REQUEST_SENDER = self._previous
        self._installed = False
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


ProcessRequest = Callable[..., Awaitable[Any]]


class AsyncTeleBotAdapter(FrameworkAdapter):
    """Runs a ``telebot.async_telebot.AsyncTeleBot`` under antiloop."""

    framework = "pyTelegramBotAPI (async)"

    def __init__(self, bot: AsyncTeleBot, *, debounce: float = DEFAULT_DEBOUNCE) -> None:
        super().__init__(debounce=debounce)
        self.bot = bot
        bot.exception_handler = _AsyncExceptionRecorder(bot.exception_handler)
        self._previous: ProcessRequest | None = None

    async def _process_request(self, token: str, url: str, method: str = "get",
                               params: dict[str, Any] | None = None, files: Any = None,
                               **kwargs: Any) -> Any:
        """``_aio._process_request``: ``url`` is the method name."""
        previous = self._previous
        assert previous is not None
        scope = current_scope() or self.outside_scope()
        if scope is None or token != self.bot.token:
            return await previous(token, url, method, params, files, **kwargs)
        clean = dict(params or {})
        clean.pop("timeout", None)  # the HTTP timeout, not a Bot API parameter
        if files:
            async def perform() -> tuple[bool, Any]:
                return True, await previous(token, url, method, params, files, **kwargs)

            return (await ledgered(scope.ctx, url, perform))[1]
        try:
            status, body = await _call(scope, url, clean)
        except TelegramError as exc:  # no answer (the call may have been made)
            raise _aio.RequestTimeout(exc.description) from exc
        if status != 200:
            raise _aio.ApiTelegramException(url, _Response(status, body), body)
        return body.get("result")

    async def _start(self, ctx: Context) -> None:
        current = _aio._process_request
        if getattr(current, "__self__", None) is not self:
            self._previous = current
            _aio._process_request = self._process_request

    async def _dispatch(self, ctx: Context) -> None:
        update = _Update.de_json(ctx.update)
        await self.bot.process_new_updates([update])

    async def _stop(self) -> None:
        if (self._previous is not None
                and getattr(_aio._process_request, "__self__", None) is self):
            _aio._process_request = self._previous
        self._previous = None
        await _aio_bot_close(self.bot)


async def _aio_bot_close(bot: AsyncTeleBot) -> None:
    """Close pyTelegramBotAPI's own aiohttp session (used for uploads), if it was opened."""
    if _aio.session_manager.session is not None:
        closer: Any = bot.close_session
        await closer()


def adapt(bot: telebot.TeleBot | AsyncTeleBot, *, debounce: float = DEFAULT_DEBOUNCE,
          threads: int = 16) -> TeleBotAdapter | AsyncTeleBotAdapter:
    """The antiloop handler for a ``TeleBot`` or an ``AsyncTeleBot``. ``threads``: how many
    updates of a sync ``TeleBot`` may run at once (its handlers run in these threads)."""
    if isinstance(bot, AsyncTeleBot):
        return AsyncTeleBotAdapter(bot, debounce=debounce)
    return TeleBotAdapter(bot, debounce=debounce, threads=threads)
