"""Test Telegram bots without Telegram: a local Bot API emulator and its pytest plugin.

``async with Emulator() as tg:`` starts a server on 127.0.0.1 that any Bot API client
(python-telegram-bot, aiogram, pyTelegramBotAPI, antiloop) can use as its API URL,
with simulated users (``tg.send``, ``tg.click``), transcripts (``tg.messages``),
counters (``tg.stats``) and faults (``tg.set_faults``). See ``docs/testing.md``.
"""

from antiloop.testing.emulator import Emulator, Faults
from antiloop.testing.limits import RateLimits
from antiloop.testing.state import ApiError, EmulatorError, ManualClock

__all__ = ["ApiError", "Emulator", "EmulatorError", "Faults", "ManualClock", "RateLimits"]
