"""Every exception antiloop raises. Messages say what happened and what to do."""

from __future__ import annotations

from typing import Any


class AntiloopError(Exception):
    """Base class of antiloop's own errors."""


class ConfigError(AntiloopError):
    """A flag, environment variable or URL is wrong."""


class StoreError(AntiloopError):
    """The store (SQLite file, ...) cannot be used; the message names the file and the fix."""


class LockError(AntiloopError):
    """The instance lock cannot be taken or was lost."""


class TelegramError(AntiloopError):
    """The Bot API answered ``ok: false`` or could not be reached."""

    def __init__(
        self,
        description: str,
        *,
        error_code: int = 0,
        method: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.description = description
        self.error_code = error_code
        self.method = method
        self.parameters = parameters or {}
        where = f"{method}: " if method else ""
        code = f"{error_code} " if error_code else ""
        super().__init__(f"{where}{code}{description}")


class BadRequest(TelegramError):
    """400: wrong parameters (chat not found, message not modified, query too old, ...)."""


class Unauthorized(TelegramError):
    """401: the token is wrong or revoked. Check TELEGRAM_BOT_TOKEN / --token."""


class Forbidden(TelegramError):
    """403: the bot was blocked by the user or kicked from the chat."""


class NotFound(TelegramError):
    """404: unknown method, or a malformed token."""


class Conflict(TelegramError):
    """409: another getUpdates poller (``kind == "poller"``) or a webhook (``kind == "webhook"``)."""

    @property
    def kind(self) -> str:
        return "webhook" if "webhook" in self.description.lower() else "poller"


class RetryAfter(TelegramError):
    """429: flood control; wait ``retry_after`` seconds before the next call in that scope."""

    @property
    def retry_after(self) -> float:
        value = self.parameters.get("retry_after", 1)
        try:
            return max(float(value), 0.0)
        except (TypeError, ValueError):
            return 1.0


class ServerError(TelegramError):
    """5xx from the Bot API: retry later."""


class NetworkError(TelegramError):
    """The Bot API could not be reached (connection refused, reset, DNS)."""


class TimedOut(NetworkError):
    """The request got no answer in time. The call may or may not have been performed."""


def error_for(code: int, description: str, method: str, parameters: dict[str, Any] | None) -> TelegramError:
    """Map a Bot API error response to the matching exception class."""
    cls: type[TelegramError]
    if code == 400:
        cls = BadRequest
    elif code == 401:
        cls = Unauthorized
    elif code == 403:
        cls = Forbidden
    elif code == 404:
        cls = NotFound
    elif code == 409:
        cls = Conflict
    elif code == 429:
        cls = RetryAfter
    elif code >= 500:
        cls = ServerError
    else:
        cls = TelegramError
    return cls(description, error_code=code, method=method, parameters=parameters)
