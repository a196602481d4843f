"""Small shared helpers: token masking, clocks, identities."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigError

_TOKEN_RE = re.compile(r"^(\d+):([A-Za-z0-9_-]+)$")
_TOKEN_IN_TEXT = re.compile(r"(\d+):[A-Za-z0-9_-]{10,}")

Clock = Callable[[], float]
"""A clock returns seconds since the epoch (``time.time`` by default)."""


def bot_id_from_token(token: str) -> int:
    """The bot id is the number before ``:`` in the token."""
    match = _TOKEN_RE.match(token.strip())
    if not match:
        raise ConfigError(
            f"the bot token {mask_token(token)!r} is not of the form <digits>:<secret>; "
            "pass it with --token or TELEGRAM_BOT_TOKEN (as given by @BotFather)"
        )
    return int(match.group(1))


def mask_token(token: str) -> str:
    """``123456:ABC...`` -> ``bot123456:***``. Never print a token any other way."""
    head = token.split(":", 1)[0]
    return f"bot{head}:***" if head.isdigit() else "bot***"


def scrub(text: str) -> str:
    """Remove anything that looks like a bot token from a text (log lines, exception messages)."""
    return _TOKEN_IN_TEXT.sub(lambda m: f"{m.group(1)}:***", text)


@dataclass(frozen=True)
class Identity:
    """Who this process is: written into the lock file and into every claim."""

    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    fence: int = 0
    """The fencing token of the lock this process holds (0 for the file lock, which needs none):
    a store shared by many machines refuses writes from an owner whose token is not the newest."""


def monotonic() -> float:
    return time.monotonic()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; return True at once if ``stop`` is set."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
