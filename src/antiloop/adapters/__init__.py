"""Run bots written with python-telegram-bot 22, aiogram 3 or pyTelegramBotAPI 4 under antiloop.

``adapt(obj)`` turns a framework object into an antiloop handler (an async callable taking a
:class:`~antiloop.context.Context`), or returns None when ``obj`` is none of them:

* a ``telegram.ext.Application``                      -> :mod:`antiloop.adapters.ptb`
* an ``aiogram.Dispatcher``, or a ``(Dispatcher, Bot)`` tuple -> :mod:`antiloop.adapters.aiogram`
* a ``telebot.TeleBot`` or ``telebot.async_telebot.AsyncTeleBot`` -> :mod:`antiloop.adapters.telebot`

A framework is imported only when the object is one of its own (it is then already imported),
so antiloop works without any of them installed. See docs/ADAPTERS.md.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._common import DEFAULT_DEBOUNCE, FrameworkAdapter, current_context

if TYPE_CHECKING:
    from ..context import Context

Handler = Callable[["Context"], Awaitable[Any]]

__all__ = ["DEFAULT_DEBOUNCE", "FrameworkAdapter", "Handler", "adapt", "current_context"]


def _is(obj: object, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` without importing ``module`` when it is not loaded."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)


def adapt(obj: object, *, debounce: float = DEFAULT_DEBOUNCE) -> Handler | None:
    """The antiloop handler for a recognised framework object, else None.

    ``debounce``: seconds in which repeated presses of one button (same user, chat, message
    and data) run the framework once; the repeats are answered at once with no text. 0 disables.
    """
    if isinstance(obj, FrameworkAdapter):
        return obj
    if _is(obj, "telegram.ext", "Application"):
        from . import ptb

        return ptb.adapt(obj, debounce=debounce)  # type: ignore[arg-type]
    if _is(obj, "aiogram", "Dispatcher"):
        from . import aiogram

        return aiogram.adapt(obj, debounce=debounce)  # type: ignore[arg-type]
    if (isinstance(obj, tuple) and len(obj) == 2 and _is(obj[0], "aiogram", "Dispatcher")
            and _is(obj[1], "aiogram", "Bot")):
        from . import aiogram

        return aiogram.adapt(obj[0], obj[1], debounce=debounce)
    if _is(obj, "telebot", "TeleBot") or _is(obj, "telebot.async_telebot", "AsyncTeleBot"):
        from . import telebot

        return telebot.adapt(obj, debounce=debounce)  # type: ignore[arg-type]
    return None
