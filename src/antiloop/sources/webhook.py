"""The webhook source: receive Telegram's POSTs, store each update, then answer 200.

Telegram re-sends an update until it gets a 2xx, so the answer comes only after the update is
committed to the inbox; if the store cannot be written the answer is 503 with ``Retry-After``
and Telegram keeps the update. A re-sent update is recognised by its key and skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from .._util import Identity
from ..errors import ConfigError, LockError, StoreError
from ..store.base import Store
from ..worker import Worker

log = logging.getLogger("antiloop.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def default_secret(token: str) -> str:
    """A secret every instance of the bot derives alike from its token (1–256 of A-Za-z0-9_-)."""
    return hashlib.sha256(f"antiloop-webhook:{token}".encode()).hexdigest()[:48]


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen {value!r} must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError(f"--webhook-url {url!r} must be an https:// URL Telegram can reach")
    return parts.path or "/"


class WebhookSource:
    """An aiohttp server answering Telegram's webhook POSTs on ``path``."""

    def __init__(self, store: Store, worker: Worker, identity: Identity, *, path: str,
                 secret: str, host: str, port: int, lease_s: float = 60.0,
                 on_lock_lost: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.worker = worker
        self.identity = identity
        self.path = path
        self.secret = secret
        self.host = host
        self.port = port
        self.lease_s = lease_s
        self.on_lock_lost = on_lock_lost
        self.received = 0
        self.rejected = 0
        self._runner: web.AppRunner | None = None

    @property
    def bound_port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            return self.port
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"cannot listen on {self.host}:{self.port} for the webhook: "
                              f"{exc.strerror}; choose another --listen") from exc
        log.info("webhook receiver listening on %s:%s%s", self.host, self.bound_port, self.path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            self.rejected += 1
            log.warning("webhook POST from %s without the right secret token: refused",
                        request.remote)
            return web.Response(status=403, text="wrong secret token")
        body = await request.read()
        try:
            update = json.loads(body)
        except ValueError:
            update = {"value": body[:1000].decode(errors="replace")}
        try:
            entries = await self.store.add_batch(self.worker.bot_id, [update], self.identity,
                                                 self.lease_s)
        except StoreError as exc:
            log.error("%s; answering 503 so Telegram keeps the update and re-sends it", exc)
            return web.Response(status=503, headers={"Retry-After": "5"}, text="store unavailable")
        except LockError as exc:
            log.error("%s; answering 503: the new holder receives the re-sent update", exc)
            self.on_lock_lost()
            return web.Response(status=503, headers={"Retry-After": "1"}, text="not the holder")
        self.received += 1
        self.worker.submit(entries, fresh=True)
        return web.Response(status=200, text="ok")
