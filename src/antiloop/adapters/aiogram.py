"""aiogram 3: ``antiloop run bot.py:dp`` (a ``Dispatcher``), or a ``(dp, bot)`` tuple, or
``antiloop.adapters.aiogram.adapt(dp, bot)``.

antiloop feeds the Dispatcher (``feed_update``); it never polls. The Bot's session is wrapped
by :class:`AntiloopSession`: every method goes to antiloop's outbox with the Context of the
update being handled. With a bare Dispatcher the adapter makes a ``Bot`` for the running bot
id; it carries no real token, so uploads of local files and downloads need a Bot you pass.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

from aiogram import Bot, Dispatcher
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import InputFile, TelegramObject, Update

from ..errors import TelegramError
from ._common import (
    DEFAULT_DEBOUNCE,
    FrameworkAdapter,
    current_scope,
    error_json,
    ledgered,
    route_call,
)

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("antiloop.adapters.aiogram")

PLACEHOLDER_SECRET = "antiloop-adapter-no-token"


def _jsonable(value: Any) -> Any:
    if isinstance(value, TelegramObject):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class AntiloopSession(BaseSession):
    """The Bot's session, replaced: methods go to antiloop's outbox; uploads and downloads go
    through the ``inner`` session (the Bot's own), uploads recorded in the update's ledger."""

    def __init__(self, adapter: AiogramAdapter, inner: BaseSession) -> None:
        super().__init__(api=inner.api, json_loads=inner.json_loads,
                         json_dumps=inner.json_dumps, timeout=inner.timeout)
        self.adapter = adapter
        self.inner = inner
        self.middleware = inner.middleware  # request middlewares the user registered

    async def close(self) -> None:
        await self.inner.close()

    async def stream_content(
        self, url: str, headers: dict[str, Any] | None = None, timeout: int = 30,
        chunk_size: int = 65536, raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        async for chunk in self.inner.stream_content(url, headers, timeout, chunk_size,
                                                     raise_for_status):
            yield chunk

    def _response(self, bot: Bot, method: TelegramMethod[TelegramType], status: int,
                  body: dict[str, Any]) -> TelegramType:
        response = self.check_response(bot=bot, method=method, status_code=status,
                                       content=json.dumps(body))
        return cast(TelegramType, response.result)

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        name = method.__api_method__
        files: dict[str, InputFile] = {}
        params: dict[str, Any] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files, _dumps_json=False)
            if prepared is not None:
                params[key] = prepared
        scope = current_scope() or self.adapter.outside_scope()
        if scope is None:
            log.warning("%s called before antiloop started the Dispatcher; sent directly", name)
            return await self.inner.make_request(bot, method, timeout)
        if files:
            async def perform() -> tuple[bool, Any]:
                return True, _jsonable(await self.inner.make_request(bot, method, timeout))

            _, result = await ledgered(scope.ctx, name, perform)
            return self._response(bot, method, 200, {"ok": True, "result": result})
        try:
            result = await route_call(scope, name, params)
        except TelegramError as exc:
            if not exc.error_code:
                raise TelegramNetworkError(method=method, message=exc.description) from exc
            return self._response(bot, method, exc.error_code, error_json(exc))
        return self._response(bot, method, 200, {"ok": True, "result": result})


class AiogramAdapter(FrameworkAdapter):
    """Runs an aiogram ``Dispatcher`` (with a ``Bot``, or one made for the running bot id)."""

    framework = "aiogram"

    def __init__(self, dispatcher: Dispatcher, bot: Bot | None = None, *,
                 debounce: float = DEFAULT_DEBOUNCE) -> None:
        super().__init__(debounce=debounce)
        self.dispatcher = dispatcher
        self.bot: Bot | None = None
        if bot is not None:
            self._mount(bot)

    def _mount(self, bot: Bot) -> None:
        if not isinstance(bot.session, AntiloopSession):
            bot.session = AntiloopSession(self, bot.session)
        self.bot = bot

    def _workflow(self, bot: Bot) -> dict[str, Any]:
        data = {"dispatcher": self.dispatcher, "bots": [bot], **self.dispatcher.workflow_data}
        data.pop("bot", None)
        return data

    async def _start(self, ctx: Context) -> None:
        if self.bot is None:
            self._mount(Bot(token=f"{ctx.bot_id}:{PLACEHOLDER_SECRET}"))
        assert self.bot is not None
        if self.bot.id != ctx.bot_id:
            log.warning("the aiogram Bot is bot %s but antiloop runs bot %s; every call is made "
                        "as bot %s", self.bot.id, ctx.bot_id, ctx.bot_id)
        await self.dispatcher.emit_startup(bot=self.bot, **self._workflow(self.bot))

    async def _dispatch(self, ctx: Context) -> None:
        assert self.bot is not None
        update = Update.model_validate(ctx.update, context={"bot": self.bot})
        await self.dispatcher.feed_update(self.bot, update, antiloop_ctx=ctx)

    async def _stop(self) -> None:
        if self.bot is not None:
            await self.dispatcher.emit_shutdown(bot=self.bot, **self._workflow(self.bot))
            await self.bot.session.close()


def adapt(dispatcher: Dispatcher, bot: Bot | None = None, *,
          debounce: float = DEFAULT_DEBOUNCE) -> AiogramAdapter:
    """The antiloop handler for ``dispatcher``. Handlers may take ``antiloop_ctx`` (the
    antiloop Context). Without ``bot``, a Bot for the running bot id is made at the first update."""
    return AiogramAdapter(dispatcher, bot, debounce=debounce)
