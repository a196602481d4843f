"""python-telegram-bot 22: ``antiloop run bot.py:application``.

antiloop feeds the ``Application`` (``Update.de_json`` + ``process_update`` through its update
processor, so ``concurrent_updates`` is honoured); its ``Updater`` never polls. Every Bot API
call of ``application.bot`` goes through a :class:`telegram.request.BaseRequest` that routes it
to antiloop's outbox with the Context of the update being handled.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.error import NetworkError as PTBNetworkError
from telegram.error import TimedOut as PTBTimedOut
from telegram.ext import Application, ExtBot
from telegram.request import BaseRequest, RequestData

from ..errors import TelegramError, TimedOut
from ._common import (
    DEFAULT_DEBOUNCE,
    FrameworkAdapter,
    Scope,
    current_scope,
    error_json,
    ledgered,
    record_error,
    route_call,
)

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("antiloop.adapters.ptb")


def _ok(result: Any) -> tuple[int, bytes]:
    return 200, json.dumps({"ok": True, "result": result}).encode()


class AntiloopRequest(BaseRequest):
    """PTB's HTTP layer, replaced: Bot API calls go to antiloop's outbox.

    Uploads (``multipart``) and file downloads are made by the ``original`` request object
    (PTB's own HTTPX client, with the Application's token and base URL); uploads are recorded
    in the update's ledger, so a re-run does not repeat them.
    """

    __slots__ = ("adapter", "original")

    def __init__(self, adapter: PTBAdapter, original: BaseRequest) -> None:
        self.adapter = adapter
        self.original = original

    @property
    def read_timeout(self) -> float | None:
        return self.original.read_timeout

    async def initialize(self) -> None:
        await self.original.initialize()

    async def shutdown(self) -> None:
        await self.original.shutdown()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        async def direct() -> tuple[int, bytes]:
            return await self.original.do_request(
                url, method, request_data, read_timeout=read_timeout,
                write_timeout=write_timeout, connect_timeout=connect_timeout,
                pool_timeout=pool_timeout)

        endpoint = url.rstrip("/").rsplit("/", 1)[-1]
        if request_data is None and method == "GET":  # a file download (File.download_*)
            return await direct()
        scope = current_scope() or self.adapter.outside_scope()
        if scope is None:
            log.warning("%s called before antiloop started the Application; sent directly",
                        endpoint)
            return await direct()
        if request_data is not None and request_data.contains_files:
            return await self._upload(scope, endpoint, direct)
        params = dict(request_data.parameters) if request_data is not None else {}
        try:
            result = await route_call(scope, endpoint, params)
        except TimedOut as exc:
            raise PTBTimedOut(exc.description) from exc
        except TelegramError as exc:
            if not exc.error_code:
                raise PTBNetworkError(exc.description) from exc
            return exc.error_code, json.dumps(error_json(exc)).encode()
        return _ok(result)

    async def _upload(self, scope: Scope, endpoint: str, direct: Any) -> tuple[int, bytes]:
        answer: list[tuple[int, bytes]] = []

        async def perform() -> tuple[bool, Any]:
            code, payload = await direct()
            answer.append((code, payload))
            if not 200 <= code <= 299:
                return False, None
            try:
                return True, json.loads(payload).get("result")
            except ValueError:
                return False, None

        _, result = await ledgered(scope.ctx, endpoint, perform)
        return answer[0] if answer else _ok(result)


class PTBAdapter(FrameworkAdapter):
    """Runs a python-telegram-bot ``Application`` under antiloop."""

    framework = "python-telegram-bot"

    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any], *,
                 debounce: float = DEFAULT_DEBOUNCE, run_post_hooks: bool = True) -> None:
        super().__init__(debounce=debounce)
        self.application = application
        self.run_post_hooks = run_post_hooks
        bot = application.bot
        requests: tuple[BaseRequest, BaseRequest] = bot._request
        if not isinstance(requests[1], AntiloopRequest):
            # PTB has no public way to swap the request of a built Bot: this private tuple is
            # (get_updates_request, request) in PTB 20-22.
            bot._request = (AntiloopRequest(self, requests[0]), AntiloopRequest(self, requests[1]))
        # Our error recorder runs first, so a user's error handler that raises
        # ApplicationHandlerStop cannot hide the error from antiloop.
        theirs = dict(application.error_handlers)
        application.error_handlers.clear()
        application.add_error_handler(self._on_error, block=True)
        application.error_handlers.update(theirs)

    async def _on_error(self, update: object, context: Any) -> None:
        if isinstance(update, Update) and context.error is not None:
            record_error(context.error)

    async def _start(self, ctx: Context) -> None:
        app = self.application
        await app.initialize()
        if self.run_post_hooks and app.post_init is not None:
            await app.post_init(app)
        await app.start()

    async def _dispatch(self, ctx: Context) -> None:
        app = self.application
        update = Update.de_json(ctx.update, app.bot)
        bot = app.bot
        if isinstance(bot, ExtBot) and bot.callback_data_cache is not None:
            bot.insert_callback_data(update)
        await app.update_processor.process_update(update, app.process_update(update))

    async def _stop(self) -> None:
        app = self.application
        if app.running:
            await app.stop()
        if self.run_post_hooks and app.post_stop is not None:
            await app.post_stop(app)
        await app.shutdown()
        if self.run_post_hooks and app.post_shutdown is not None:
            await app.post_shutdown(app)


def adapt(application: Application[Any, Any, Any, Any, Any, Any], *,
          debounce: float = DEFAULT_DEBOUNCE, run_post_hooks: bool = True) -> PTBAdapter:
    """The antiloop handler for ``application`` (``post_init``/``post_stop``/``post_shutdown``
    run as ``run_polling`` would run them, unless ``run_post_hooks=False``)."""
    return PTBAdapter(application, debounce=debounce, run_post_hooks=run_post_hooks)
