"""antiloop: every Telegram update handled exactly once.

One poller per bot across processes, a durable inbox, a ledger of handled updates and sent
replies, callback queries answered exactly once, impatient presses debounced, replies never
repeated or looped.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .botapi import BotAPI
from .context import Context
from .errors import (
    AntiloopError,
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    LockError,
    NetworkError,
    NotFound,
    RetryAfter,
    StoreError,
    TelegramError,
    TimedOut,
    Unauthorized,
)
from .outbox import Outbox
from .runtime import Runtime, Settings, load_target, run

__all__ = [
    "AntiloopError", "BadRequest", "BotAPI", "ConfigError", "Conflict", "Context", "Forbidden",
    "LockError", "NetworkError", "NotFound", "Outbox", "RetryAfter", "Runtime", "Settings",
    "StoreError", "TelegramError", "TimedOut", "Unauthorized", "__version__", "load_target", "run",
]

try:  # the Router lands in its own module
    from .router import Router

    __all__ += ["Router"]
except ImportError:  # pragma: no cover
    pass
