"""A small async Bot API client: ``await api.call("sendMessage", chat_id=1, text="hi")``."""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

import aiohttp

from ._util import bot_id_from_token, mask_token, scrub
from .errors import NetworkError, TelegramError, TimedOut, error_for

DEFAULT_API_URL = "https://api.telegram.org"


class BotAPI:
    """Calls ``{api_url}/bot{token}/{method}`` with a JSON body; returns ``result``.

    Errors become :mod:`antiloop.errors` exceptions (``Conflict`` with ``kind``, ``RetryAfter``
    with ``retry_after``, ``BadRequest``, ``Unauthorized``, ``Forbidden``, ``NetworkError``,
    ``TimedOut``). The token never appears in a message: the bot prints as ``bot123:***``.
    """

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        *,
        timeout: float = 30.0,
        connections: int = 100,
    ) -> None:
        self.bot_id = bot_id_from_token(token)
        self._token = token.strip()
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"BotAPI({mask_token(self._token)}, {self.api_url!r})"

    @property
    def name(self) -> str:
        return mask_token(self._token)

    async def __aenter__(self) -> BotAPI:
        await self.initialize()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    async def initialize(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: json.dumps(o, separators=(",", ":"))
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, *, _timeout: float | None = None, **params: Any) -> Any:
        """Call a Bot API method. ``None`` parameters are left out."""
        if self._session is None:
            await self.initialize()
        assert self._session is not None
        body = {k: v for k, v in params.items() if v is not None}
        url = f"{self.api_url}/bot{self._token}/{method}"
        total = _timeout if _timeout is not None else self.timeout
        if method == "getUpdates":
            total = float(body.get("timeout", 0)) + self.timeout
        try:
            async with self._session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=total)
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError as exc:
            raise TimedOut(
                f"no answer from {self.api_url} within {total:.0f} s; the call may have been "
                "performed", method=method,
            ) from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(
                f"cannot reach {self.api_url}: {scrub(str(exc)) or type(exc).__name__}",
                method=method,
            ) from exc
        except asyncio.CancelledError:
            raise
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise error_for(
                status if status >= 400 else 502,
                f"the Bot API answered HTTP {status} with a body that is not JSON",
                method,
                None,
            ) from exc
        if not isinstance(data, dict):
            raise TelegramError("the Bot API answered with a JSON that is not an object",
                                error_code=status, method=method)
        if data.get("ok"):
            return data.get("result")
        code = int(data.get("error_code") or status or 0)
        description = scrub(str(data.get("description") or f"HTTP {status}"))
        parameters = data.get("parameters") if isinstance(data.get("parameters"), dict) else None
        raise error_for(code, description, method, parameters)
