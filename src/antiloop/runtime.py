"""Wiring: lock -> store -> polling source -> worker -> handler -> outbox, and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ._util import Identity, bot_id_from_token, mask_token, sleep_or_stop
from .botapi import DEFAULT_API_URL, BotAPI
from .context import Context
from .errors import (
    AntiloopError,
    ConfigError,
    LockError,
    NetworkError,
    TelegramError,
    Unauthorized,
)
from .lock import InstanceLock, LockStatus, default_lock_url, open_lock
from .outbox import Outbox
from .sources.polling import PollingSource
from .sources.webhook import WebhookSource, default_secret, parse_listen, path_of
from .store import DEFAULT_STORE, RETENTION_S, open_store
from .worker import Worker

log = logging.getLogger("antiloop")

Handler = Callable[[Context], Awaitable[Any]]
T = TypeVar("T")


@dataclass
class Settings:
    """Everything ``antiloop run`` can be told; each has a flag and most an environment variable."""

    token: str
    api_url: str = DEFAULT_API_URL
    store: str = DEFAULT_STORE
    lock: str | None = None
    concurrency: int = 16
    max_attempts: int = 5
    takeover: bool = False
    delete_webhook: bool = False
    rate_limit: bool = True
    poll_timeout: int = 30
    lease_s: float = 60.0
    drain_timeout: float = 10.0
    allowed_updates: list[str] | None = None
    backoff_base: float = 0.5
    purge_every_s: float = 600.0
    recover_every_s: float = 5.0
    webhook_url: str | None = None
    listen: str = "127.0.0.1:8080"
    webhook_secret: str | None = None
    max_connections: int = 40

    @property
    def lock_url(self) -> str:
        return self.lock or default_lock_url(self.store)

    def validate(self) -> None:
        """Refuse bad settings before anything (lock, store, inbox) is touched."""
        for name in ("concurrency", "max_attempts"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.webhook_url:
            path_of(self.webhook_url)
            parse_listen(self.listen)
            if not 1 <= self.max_connections <= 100:
                raise ConfigError("--max-connections must be between 1 and 100")


class Runtime:
    """One process of a bot: waits for the lock, then polls, handles and sends until stopped."""

    def __init__(self, handler: Handler, settings: Settings, *, identity: Identity | None = None,
                 outbox_options: dict[str, Any] | None = None) -> None:
        if not callable(handler):
            raise ConfigError(f"the handler {handler!r} is not callable")
        self.handler = handler
        self.settings = settings
        self.bot_id = bot_id_from_token(settings.token)
        settings.validate()
        self.identity = identity or Identity()
        self.outbox_options = outbox_options or {}
        self.stop_event = asyncio.Event()
        self.worker: Worker | None = None
        self.source: PollingSource | None = None
        self.webhook: WebhookSource | None = None
        self.is_holder = False
        self.lost_lock = False

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGINT/SIGTERM (or :meth:`request_stop`). Returns the exit status."""
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
            with contextlib.suppress(AttributeError, ValueError):
                # With a file-size limit, a write past it must fail (EFBIG), not kill us.
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            return await self._run()
        except AntiloopError as exc:
            log.error("%s", exc)
            return 2

    async def _run(self) -> int:
        s = self.settings
        name = mask_token(s.token)
        store = open_store(s.store)
        await store.open()
        lock = open_lock(s.lock_url, self.identity, self.bot_id)
        api = BotAPI(s.token, s.api_url)
        heartbeat: asyncio.Task[None] | None = None
        try:
            if s.takeover:
                holder = lock.request_takeover()
                if holder is not None:
                    log.info("asked pid %s on %s to hand over %s; waiting for it to drain",
                             holder.pid, holder.host, name)
            log.info("%s: instance %s (pid %s on %s) starting; store %s, lock %s", name,
                     self.identity.instance_id, self.identity.pid, self.identity.host, store.url,
                     lock.url)
            got = await lock.acquire(self.stop_event, self._log_waiting)
            if not got:
                log.info("%s: stopped while waiting for the lock", name)
                return 0
            self.is_holder = True
            if lock.fence:
                self.identity = dataclasses.replace(self.identity, fence=lock.fence)
            heartbeat = asyncio.create_task(lock.heartbeat(self.stop_event))
            log.info("%s: this instance holds the lock (%s); %s", name, lock.url,
                     "receiving webhooks" if s.webhook_url else "polling")
            return await self._serve(api, store, lock)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            await api.shutdown()
            await store.close()
            try:
                lock.release()
            except LockError as exc:  # the lease was gone already: someone else holds it
                log.error("%s", exc)
                self.lost_lock = True

    def _log_waiting(self, status: LockStatus) -> None:
        holder = status.holder
        if holder is None:
            return
        now = time.time()
        age = holder.heartbeat_age(now)
        health = ("it is healthy" if age < 5 else
                  f"its heartbeat is {age:.0f} s old (stopped or stuck?)")
        when = ("within a second of its exit" if status.path and not status.path.startswith("redis")
                else "when its lease expires, or at once when it exits cleanly")
        other = "" if holder.bot_id == self.bot_id else (
            f" NOTE: it runs another bot (id {holder.bot_id}); give each bot its own --lock.")
        log.warning(
            "another instance holds the lock %s: %s; %s. Waiting as a hot standby (takeover "
            "%s). `antiloop status` shows it; `antiloop run --takeover` asks it to hand "
            "over.%s", status.path, holder.describe(now), health, when, other)

    async def _username(self, api: BotAPI) -> str | None:
        for attempt in range(5):
            try:
                me = await api.call("getMe")
                return str(me.get("username")) if isinstance(me, dict) and me.get("username") else None
            except Unauthorized as exc:
                raise ConfigError(
                    f"Telegram refused the token {api.name} ({exc.description}); check "
                    "--token / TELEGRAM_BOT_TOKEN"
                ) from exc
            except (NetworkError, TelegramError) as exc:
                log.warning("getMe failed (%s); retrying", exc)
                if await sleep_or_stop(self.stop_event, min(5.0, 0.5 * 2 ** attempt)):
                    return None
        return None

    async def _until_stopped(self, coro: Awaitable[T]) -> T | None:
        """Run ``coro`` unless SIGTERM comes first (then it is cancelled and None returned)."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.create_task(self.stop_event.wait())
        try:
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def _serve(self, api: BotAPI, store: Any, lock: InstanceLock) -> int:
        s = self.settings
        username = await self._until_stopped(self._username(api))
        if self.stop_event.is_set():
            return 0
        await store.become_exclusive(self.bot_id)
        options = {"rate_limits": s.rate_limit, "lock_valid": lock.valid, **self.outbox_options}
        outbox = Outbox(api, store, **options)
        worker = Worker(self.handler, store, outbox, self.identity, self.bot_id,
                        concurrency=s.concurrency, max_attempts=s.max_attempts,
                        backoff_base=s.backoff_base, bot_username=username,
                        lock_valid=lock.valid)
        self.worker = worker
        worker.start()
        receiver: WebhookSource | None = None
        tasks: list[asyncio.Task[Any]] = []
        status = 0
        try:
            # We hold the lock, so whoever claimed unfinished entries before us is gone.
            recovered = await store.recover(self.bot_id, self.identity, s.lease_s,
                                            take_all=True, limit=1_000_000)
            if recovered:
                log.info("resuming %d unfinished updates from the inbox", len(recovered))
                worker.submit(recovered)
            main: Coroutine[Any, Any, Any]
            if s.webhook_url:
                receiver = await self._until_stopped(self._start_webhook(api, store, worker, lock))
                if receiver is None:
                    return 0
                main = self.stop_event.wait()
            else:
                source = PollingSource(api, store, worker, self.identity,
                                       timeout=s.poll_timeout, allowed_updates=s.allowed_updates,
                                       delete_webhook=s.delete_webhook, lease_s=s.lease_s,
                                       lock_valid=lock.valid)
                self.source = source
                main = source.run(self.stop_event)
            tasks = [
                asyncio.create_task(main, name="antiloop-source"),
                asyncio.create_task(self._maintenance(store, worker), name="antiloop-maintenance"),
                asyncio.create_task(self.stop_event.wait(), name="antiloop-stop"),
                asyncio.create_task(lock.lost.wait(), name="antiloop-lost"),
            ]
            source_task, maintenance, _stopper, lost = tasks
            done, _ = await asyncio.wait([*tasks, worker.failed_task()],
                                         return_when=asyncio.FIRST_COMPLETED)
            exc = next((t.exception() for t in (source_task, maintenance)
                        if t in done and not t.cancelled() and t.exception() is not None), None)
            if lost in done or isinstance(exc, LockError) or worker.lock_lost:
                self.lost_lock = True
                status = 3
                log.error("%s: this process lost the lock %s (another instance holds it now): "
                          "stopping at once, without finishing or releasing anything; the new "
                          "holder re-runs what was in flight", api.name, lock.url)
            elif isinstance(exc, Unauthorized):
                log.error("Telegram refused the token %s: %s; check --token", api.name,
                          exc.description)
                status = 2
            elif exc is not None:
                raise exc
        finally:
            self.stop_event.set()
            if receiver is not None:
                await receiver.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            left = await worker.stop(0 if self.lost_lock else s.drain_timeout)
            if left and not self.lost_lock:
                with contextlib.suppress(AntiloopError):
                    await store.release(self.bot_id, left, owner=self.identity)
                log.info("released %d unfinished updates for the next holder", len(left))
            aclose = getattr(self.handler, "aclose", None)
            if aclose is not None:  # an adapted framework's shutdown hooks
                try:
                    await aclose()
                except Exception as exc:
                    log.warning("the handler's shutdown failed: %s", exc)
            log.info("stopped: %d handled, %d dead letters", worker.handled, worker.dead)
        return status

    async def _start_webhook(self, api: BotAPI, store: Any, worker: Worker,
                             lock: InstanceLock) -> WebhookSource:
        s = self.settings
        assert s.webhook_url is not None
        host, port = parse_listen(s.listen)
        secret = s.webhook_secret or default_secret(s.token)
        receiver = WebhookSource(store, worker, self.identity, path=path_of(s.webhook_url),
                                 secret=secret, host=host, port=port, lease_s=s.lease_s,
                                 on_lock_lost=lock.lost.set)
        self.webhook = receiver
        await receiver.start()
        try:
            await api.call("setWebhook", url=s.webhook_url, secret_token=secret,
                           max_connections=s.max_connections,
                           allowed_updates=s.allowed_updates, drop_pending_updates=False)
        except TelegramError:
            await receiver.stop()
            raise
        log.info("%s: webhook set to %s (pending updates kept)", api.name, s.webhook_url)
        return receiver

    async def _maintenance(self, store: Any, worker: Worker) -> None:
        """Purge old finished entries in bounded steps; pick up entries made runnable again."""
        s = self.settings
        last_purge = 0.0
        while not self.stop_event.is_set():
            now = time.time()
            try:
                if now - last_purge >= s.purge_every_s:
                    last_purge = now
                    for _ in range(100):
                        n = await store.purge(self.bot_id, now - RETENTION_S, 5000)
                        if n < 5000:
                            break
                        await asyncio.sleep(0)
                again = await store.recover(self.bot_id, self.identity, s.lease_s,
                                            take_all=False, limit=1000)
                if again:
                    log.info("picking up %d updates made runnable again", len(again))
                    worker.submit(again)
            except LockError:
                raise  # lost the lock: the runtime stops
            except AntiloopError as exc:
                log.warning("maintenance: %s", exc)
            if await sleep_or_stop(self.stop_event, s.recover_every_s):
                return


def load_target(target: str) -> Handler:
    """``path/to/file.py:name`` or ``package.module:name`` -> the object it names."""
    if ":" not in target:
        raise ConfigError(f"TARGET {target!r} must be path/to/file.py:name or module:name")
    where, _, attr = target.rpartition(":")
    if not attr.isidentifier():
        raise ConfigError(f"TARGET {target!r}: {attr!r} is not a Python name")
    if not where or where.startswith("."):
        raise ConfigError(f"TARGET {target!r} names no module: use path/to/file.py:{attr} or "
                          f"package.module:{attr}")
    if where.endswith(".py") or "/" in where:
        path = Path(where)
        if not path.exists():
            raise ConfigError(f"TARGET {target!r}: no such file {path.resolve()}")
        modname = f"antiloop_target_{path.stem}"
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"TARGET {target!r}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        sys.path.insert(0, str(path.resolve().parent))
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except (ImportError, ValueError, TypeError) as exc:
            raise ConfigError(f"TARGET {target!r}: cannot import {where}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"TARGET {target!r}: {where} has no {attr!r}") from exc
    if not (inspect.iscoroutinefunction(obj) or _is_router(obj)):
        adapted = _adapt(obj)
        if adapted is not None:
            return adapted
    if not callable(obj):
        raise ConfigError(
            f"TARGET {target!r} is a {type(obj).__name__}, not a Router, an async def "
            "handler(ctx), or a python-telegram-bot Application, aiogram Dispatcher or "
            "pyTelegramBotAPI bot")
    if inspect.isfunction(obj) and not inspect.iscoroutinefunction(obj):
        raise ConfigError(f"TARGET {target!r} must be an async def handler(ctx) or a Router")
    handler: Handler = obj
    return handler


def _is_router(obj: object) -> bool:
    try:
        from .router import Router
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Router)


def _adapt(obj: object) -> Handler | None:
    """A framework's application/dispatcher/bot, fed by antiloop instead of its own polling."""
    try:
        from . import adapters
    except ImportError:  # pragma: no cover
        return None
    adapt = getattr(adapters, "adapt", None)
    if adapt is None:
        return None
    result: Handler | None = adapt(obj)
    return result


def run(handler: Handler, token: str, **settings: Any) -> int:
    """Run a bot in this process (blocking): ``antiloop.run(router, token="123:abc")``."""
    return asyncio.run(Runtime(handler, Settings(token=token, **settings)).run())
