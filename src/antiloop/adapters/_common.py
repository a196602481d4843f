"""What every framework adapter shares: the current update's scope, the call router, debounce,
a lazy framework lifecycle, and a replay-safe path for calls the outbox cannot carry (uploads).

The adapters know the Context contract only: ``ctx.outbox.call``, ``ctx.answer``,
``ctx.replayed_result``/``ctx.next_ordinal`` and the store windows the Router uses too.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..context import press_key
from ..errors import TelegramError

if TYPE_CHECKING:
    from ..context import Context
    from ..outbox import Outbox

log = logging.getLogger("antiloop.adapters")

DEFAULT_DEBOUNCE = 1.0
"""Seconds in which a repeated press (same user, chat, message and data) runs nothing."""

POLLING_REFUSED = (
    "Conflict: antiloop polls for this bot; the framework must not call getUpdates under "
    "antiloop (do not start its polling loop or a webhook in the adapted bot)"
)


@dataclass
class Scope:
    """Where a framework's Bot API call belongs: the update being handled (``ctx``), or none
    (startup, shutdown, a job) with the runtime's outbox still known."""

    ctx: Context | None
    outbox: Outbox
    loop: asyncio.AbstractEventLoop
    errors: list[BaseException] = field(default_factory=list)


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "antiloop_adapter_scope", default=None)


def current_scope() -> Scope | None:
    return _current.get()


def current_context() -> Context | None:
    """The antiloop :class:`~antiloop.context.Context` of the update a framework handler is
    running for (None outside an update)."""
    scope = _current.get()
    return scope.ctx if scope is not None else None


def record_error(exc: BaseException) -> bool:
    """Remember a handler exception the framework swallowed; re-raised after dispatch.
    Returns False when there is no update scope (a job, a detached task)."""
    scope = _current.get()
    if scope is None or scope.ctx is None:
        return False
    scope.errors.append(exc)
    return True


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


# Parameters whose value is a JSON object or array in the Bot API. Clients that encode a request
# as a form (pyTelegramBotAPI) pass them as JSON strings; antiloop sends JSON, so they are decoded.
# Text-like parameters (text, caption, data, query...) are never touched.
JSON_FIELDS = frozenset({
    "reply_markup", "entities", "caption_entities", "explanation_entities", "question_entities",
    "media", "options", "allowed_updates", "reply_parameters", "link_preview_options", "results",
    "commands", "scope", "permissions", "message_ids", "button", "menu_button", "prices",
    "shipping_options", "errors", "reaction", "sticker", "stickers", "mask_position",
    "rights", "suggested_post_parameters", "input_message_content", "checklist",
})


def decode_json_fields(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in JSON_FIELDS and isinstance(value, str) and value[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


async def route_call(scope: Scope, method: str, params: dict[str, Any]) -> Any:
    """One framework Bot API call, the antiloop way. Raises :class:`TelegramError`."""
    if method.lower() == "getupdates":
        raise TelegramError(POLLING_REFUSED, error_code=409, method=method)
    ctx = scope.ctx
    if (ctx is not None and ctx.callback_query_id is not None
            and method.lower() == "answercallbackquery"
            and str(params.get("callback_query_id")) == ctx.callback_query_id):
        rest = dict(params)
        rest.pop("callback_query_id", None)
        text = rest.pop("text", None)
        show_alert = _truthy(rest.pop("show_alert", False))
        result = await ctx.answer(text, show_alert=show_alert, **rest)
        return True if result is None else result
    return await scope.outbox.call(ctx, method, params)


async def ledgered(ctx: Context | None, method: str,
                   perform: Callable[[], Awaitable[tuple[bool, Any]]]) -> tuple[bool, Any]:
    """A call the outbox cannot carry (a multipart upload), made by the framework's own HTTP
    client but numbered and recorded like an outbox call: a re-run of the update skips it.
    ``perform`` returns ``(ok, result)``; only an ``ok`` result is recorded. No rate limits,
    no 429 wait, no repeat window on this path."""
    if ctx is None:
        return await perform()
    ordinal = ctx.next_ordinal()
    done, result = ctx.replayed_result(ordinal)
    if done:
        log.info("update %s: call %d (%s, an upload) was already made before a restart; skipped",
                 ctx.update_id, ordinal, method)
        return True, result
    ok, result = await perform()
    if ok:
        await ctx.store.record_send(ctx.bot_id, ctx.update_id, ordinal, method, result)
    return ok, result


def error_json(exc: TelegramError) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": exc.error_code,
                            "description": exc.description}
    if exc.parameters:
        body["parameters"] = exc.parameters
    return body


class FrameworkAdapter:
    """An antiloop handler that feeds one framework object.

    Subclasses implement :meth:`_start` (framework startup, once, at the first update),
    :meth:`_dispatch` (run the framework for ``ctx.update``) and :meth:`_stop`.
    Handler exceptions the framework swallowed must be passed to :func:`record_error`: they are
    re-raised after dispatch so that antiloop retries the update, then parks it as a dead letter.
    """

    framework = "framework"

    def __init__(self, *, debounce: float = DEFAULT_DEBOUNCE) -> None:
        if debounce < 0:
            raise ValueError("debounce is a number of seconds >= 0 (0 disables it)")
        self.debounce = debounce
        self.outbox: Outbox | None = None
        self.started = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<antiloop {self.framework} adapter, debounce={self.debounce}>"

    def outside_scope(self) -> Scope | None:
        """The scope for a call made outside any update (None before the first update)."""
        if self.outbox is None:
            return None
        return Scope(None, self.outbox, asyncio.get_running_loop())

    async def __call__(self, ctx: Context) -> None:
        # As in the Router: only a first attempt is debounced. A re-run (retry, crash) runs:
        # the window it would hit may be its own, taken by the attempt that failed.
        if ctx.is_callback and self.debounce > 0 and ctx.attempt == 1:
            key = press_key(ctx)
            if await ctx.store.hit_window(ctx.bot_id, key, self.debounce):
                await ctx.store.count_suppressed(ctx.bot_id, "debounced")
                log.debug("update %s: repeated press (%s within %.1f s); answered, not run",
                          ctx.update_id, key, self.debounce)
                if not ctx.answered:
                    await ctx.answer()
                return
        await self._ensure_started(ctx)
        scope = Scope(ctx, ctx.outbox, asyncio.get_running_loop())
        token = _current.set(scope)
        try:
            await self._dispatch(ctx)
        finally:
            _current.reset(token)
        if scope.errors:
            raise scope.errors[0]

    async def _ensure_started(self, ctx: Context) -> None:
        if self.started:
            return
        async with self._lock:
            if self.started:
                return
            self.outbox = ctx.outbox
            token = _current.set(Scope(None, ctx.outbox, asyncio.get_running_loop()))
            try:
                await self._start(ctx)
            finally:
                _current.reset(token)
            self.started = True

    async def aclose(self) -> None:
        """Shut the framework down (its shutdown hooks run); a no-op if it never started."""
        async with self._lock:
            if not self.started:
                return
            self.started = False
            scope = self.outside_scope()
            token = _current.set(scope)
            try:
                await self._stop()
            finally:
                _current.reset(token)

    async def _start(self, ctx: Context) -> None:
        """Framework startup; runs once, before the first update (``ctx``) is dispatched."""

    async def _dispatch(self, ctx: Context) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        """Framework shutdown."""
