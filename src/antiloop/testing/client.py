"""A raw Bot API client for tests: any body encoding, the answer as Telegram sent it.

Not a bot framework: it exists to poke the emulator (or any Bot API server) directly::

    async with aiohttp.ClientSession() as session:
        raw = RawBotClient(session, tg.base_url, Emulator.token_for(123))
        status, body = await raw.call("getUpdates", encoding="form", timeout=1)
        updates = await raw.ok("getUpdates")            # asserts ok, returns result
        code, text = await raw.error("sendMessage", chat_id=1, text="x")
"""

from __future__ import annotations

import json
from typing import Any, Literal

import aiohttp

__all__ = ["Encoding", "RawBotClient"]

Encoding = Literal["json", "form", "query", "multipart"]


class RawBotClient:
    """Calls ``{base_url}/bot{token}/{method}``.

    ``encoding`` picks the request shape: ``"json"`` (a JSON body, values as they are),
    ``"form"`` (x-www-form-urlencoded), ``"query"`` (a GET query string) or
    ``"multipart"`` (multipart/form-data); in the last three, values that are not
    strings are JSON-encoded, as Telegram expects.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])

    def url(self, method: str) -> str:
        return f"{self.base_url}/bot{self.token}/{method}"

    async def call(
        self, method: str, *, encoding: Encoding = "json", **params: Any
    ) -> tuple[int, dict[str, Any]]:
        """Returns ``(http_status, body)``."""
        url = self.url(method)
        present = {k: v for k, v in params.items() if v is not None}
        if encoding == "json":
            request = self.session.post(url, json=present)
        else:
            flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in present.items()}
            if encoding == "form":
                request = self.session.post(url, data=flat)
            elif encoding == "query":
                request = self.session.get(url, params=flat)
            else:
                form = aiohttp.FormData(default_to_multipart=True)
                for key, value in flat.items():
                    form.add_field(key, value)
                request = self.session.post(url, data=form)
        async with request as response:
            body: dict[str, Any] = await response.json(content_type=None)
            return response.status, body

    async def ok(self, method: str, *, encoding: Encoding = "json", **params: Any) -> Any:
        """The ``result`` of a successful call; AssertionError with the answer otherwise."""
        status, body = await self.call(method, encoding=encoding, **params)
        if status != 200 or body.get("ok") is not True:
            raise AssertionError(f"{method} failed: HTTP {status} {body}")
        return body["result"]

    async def error(
        self, method: str, *, encoding: Encoding = "json", **params: Any
    ) -> tuple[int, str]:
        """``(error_code, description)`` of a failed call; AssertionError if it succeeded
        or the error is not in Telegram's shape."""
        status, body = await self.call(method, encoding=encoding, **params)
        if body.get("ok") is not False or body.get("error_code") != status:
            raise AssertionError(f"{method}: expected a Telegram error, got HTTP {status} {body}")
        return status, str(body["description"])
