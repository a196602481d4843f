"""claim -> handle -> complete. One chat at a time, in order; many chats at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ._util import Identity, sleep_or_stop
from .context import Context
from .errors import LockError, StoreError
from .outbox import Outbox
from .store.base import InboxEntry, Store

log = logging.getLogger("antiloop.worker")

Handler = Callable[[Context], Awaitable[Any]]
Key = tuple[str, int]


class Worker:
    """Runs the handler for each inbox entry it is given.

    Entries with the same order key (the chat, else the user) run one at a time in update order:
    a failing update blocks the rest of its chat while it is retried, as Telegram does. Up to
    ``concurrency`` chats run at once. A handler that raises is retried with exponential backoff;
    after ``max_attempts`` attempts the update is parked as a dead letter with the exception.
    """

    def __init__(
        self,
        handler: Handler,
        store: Store,
        outbox: Outbox,
        identity: Identity,
        bot_id: int,
        *,
        concurrency: int = 16,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        bot_username: str | None = None,
        lock_valid: Callable[[], bool] = lambda: True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.handler = handler
        self.store = store
        self.outbox = outbox
        self.identity = identity
        self.bot_id = bot_id
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.bot_username = bot_username
        self.lock_valid = lock_valid
        self._chats: dict[Key, deque[InboxEntry]] = {}
        self._ready: asyncio.Queue[Key] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._completing: set[asyncio.Future[Any]] = set()
        self._finalizing = 0
        self._none_finalizing = asyncio.Event()
        self._none_finalizing.set()
        self._store_failures = 0
        self._fresh: set[int] = set()
        self.lock_lost = False
        self._lock_lost_event: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._backlog = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        self.max_backlog = 5000
        self.handled = 0
        self.failed = 0
        self.dead = 0

    @property
    def backlog(self) -> int:
        """Entries given to the worker and not finished yet."""
        return self._backlog

    def start(self) -> None:
        for i in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._run(), name=f"antiloop-worker-{i}"))

    def submit(self, entries: list[InboxEntry], *, fresh: bool = False) -> None:
        """Queue entries. ``fresh``: just inserted by this process (nothing can have been sent
        for them yet, so the send ledger need not be read)."""
        for entry in entries:
            if fresh and entry.attempts <= 1:
                self._fresh.add(entry.update_id)
            key: Key = ("c", entry.order_key) if entry.order_key is not None else ("u", entry.update_id)
            queue = self._chats.get(key)
            if queue is None:
                self._chats[key] = deque([entry])
                self._ready.put_nowait(key)
            else:
                queue.append(entry)
            self._backlog += 1
        if self._backlog:
            self._idle.clear()
        if self._backlog >= self.max_backlog:
            self._room.clear()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def failed_task(self) -> asyncio.Future[None]:
        """Resolves when a worker stops because the lock was lost (the runtime then stops)."""
        return self._lock_lost_event

    async def _run(self) -> None:
        while not self._stop.is_set():
            key = await self._ready.get()
            if key[0] == "stop":
                return
            queue = self._chats[key]
            try:
                while queue and not self._stop.is_set():
                    await self._handle(queue[0])
                    queue.popleft()
                    self._finished_one()
            except _Stopping:
                if not self.lock_valid():
                    self._lose_lock()
                return
            except LockError as exc:
                log.error("%s", exc)
                self._lose_lock()
                return
            except Exception:
                # A bug of ours, not the handler's (those are caught in _handle): keep the
                # chat and this worker alive, try that chat again shortly.
                log.exception("worker error on %s; retrying that chat in 1 s", key)
                asyncio.get_running_loop().call_later(1.0, self._ready.put_nowait, key)
                continue
            finally:
                if not queue:
                    self._chats.pop(key, None)
                # else: stopping; what is left is released by stop()

    def _lose_lock(self) -> None:
        self.lock_lost = True
        if not self._lock_lost_event.done():
            self._lock_lost_event.set_result(None)

    def _finished_one(self) -> None:
        self._backlog -= 1
        if self._backlog < self.max_backlog // 2:
            self._room.set()
        if self._backlog == 0:
            self._idle.set()

    async def _handle(self, entry: InboxEntry) -> None:
        attempts = entry.attempts
        # Results of the calls already made for this update, by ordinal: from the store when an
        # earlier holder (or an earlier attempt of ours) made them, and from our own earlier
        # attempts in this process even when the store could not record them.
        made: dict[int, Any] = {}
        loaded = entry.update_id in self._fresh
        self._fresh.discard(entry.update_id)
        if attempts > self.max_attempts:
            # Claimed this often without ever failing cleanly: it killed the process (OOM, a
            # crash, a hang ended by SIGKILL) each time. Park it instead of looping forever.
            error = (f"the process died while handling it {attempts - 1} times "
                     f"(--max-attempts {self.max_attempts})")
            log.error("update %s: %s; parked as a dead letter", entry.update_id, error)
            await self._park(entry, error)
            return
        while True:
            if not loaded:
                try:
                    made.update(await self.store.sends_for(self.bot_id, entry.update_id))
                    loaded = True
                    self._store_failures = 0
                except StoreError as exc:
                    await self._store_trouble(exc, entry)
                    continue
            if not self.lock_valid():
                log.error("update %s not started: this process no longer holds the lock",
                          entry.update_id)
                raise _Stopping()
            ctx = Context(entry.update, bot_id=self.bot_id, outbox=self.outbox, store=self.store,
                          attempt=attempts, bot_username=self.bot_username, replayed=made)
            failure: BaseException | None
            try:
                try:
                    await self.handler(ctx)
                except BaseException:
                    await self._finish(ctx)
                    await self._settle_quietly(ctx)  # the retry must see what this attempt sent
                    raise
                await self._finish(ctx)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if self._stop.is_set() or (task is not None and task.cancelling()):
                    raise  # we are being stopped
                failure = exc  # the handler's own doing: a failure like any other
            except LockError:
                raise  # not the handler's fault: stop; the new holder re-runs the update
            except Exception as exc:
                failure = exc
            else:
                failure = None
            if failure is not None:
                attempts = await self._failed(entry, attempts, failure)
                if attempts == 0:
                    return  # parked
                loaded = False  # read the ledger: what the failed attempt sent is skipped
                continue
            # The chat moves on now; the update is completed once every call it made is
            # recorded (records were queued first, so with group commit they land in the same
            # transaction or an earlier one). If we die first, the update is re-run and its
            # recorded calls are skipped. stop() waits for all of this.
            self.handled += 1
            self._finalize(ctx, entry)
            return

    def _finalize(self, ctx: Context, entry: InboxEntry) -> None:
        pending = [record for _, _, record in ctx.pending_records]
        if not pending:
            self._complete(entry)
            return
        self._finalizing += 1
        self._none_finalizing.clear()
        left = len(pending)

        def one_done(_: asyncio.Future[Any]) -> None:
            nonlocal left
            left -= 1
            if left:
                return
            self._finalizing -= 1
            if not self._finalizing:
                self._none_finalizing.set()
            error = self.outbox.take_settled(ctx)
            if error is None:
                self._complete(entry)
                return
            # The store could not record a call Telegram accepted: run the update again here
            # (the outbox remembers the call, so the re-run records it instead of repeating it).
            log.error("update %s: a call could not be recorded (%s); running it again to "
                      "record it", entry.update_id, error)
            self.handled -= 1
            entry.attempts += 1
            self.submit([entry])

        for record in pending:
            record.add_done_callback(one_done)

    def _complete(self, entry: InboxEntry) -> None:
        nowait = getattr(self.store, "complete_nowait", None)
        try:
            done: asyncio.Future[Any] = (
                nowait(self.bot_id, entry.update_id, self.identity) if nowait is not None
                else asyncio.ensure_future(self.store.complete(self.bot_id, entry.update_id,
                                                               self.identity)))
        except StoreError as exc:
            log.error("could not record update %s as done (it will be re-run, with its calls "
                      "skipped, by the next holder): %s", entry.update_id, exc)
            return
        self._completing.add(done)
        done.add_done_callback(self._completed)

    async def _failed(self, entry: InboxEntry, attempts: int, exc: BaseException) -> int:
        """Record a failed attempt; park it after ``max_attempts``. Returns the attempt number
        to run next, or 0 when the update was parked."""
        self.failed += 1
        error = f"{type(exc).__name__}: {exc}"
        if attempts >= self.max_attempts:
            tb = traceback.format_exception(exc)
            log.error("update %s failed %d times, parked as a dead letter: %s\n%s",
                      entry.update_id, attempts, error, "".join(tb[-6:]).rstrip())
            await self._park(entry, error)
            return 0
        try:
            attempts = await self.store.fail(self.bot_id, entry.update_id, error, dead=False,
                                             owner=self.identity)
            self._store_failures = 0
        except StoreError as store_exc:
            log.error("%s", store_exc)
            attempts += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 2))
        delay *= random.uniform(0.8, 1.2)
        log.warning("update %s failed (attempt %d of %d): %s; retrying in %.1f s",
                    entry.update_id, attempts - 1, self.max_attempts, error, delay)
        if await sleep_or_stop(self._stop, delay):
            raise _Stopping() from None
        return attempts

    async def _park(self, entry: InboxEntry, error: str) -> None:
        """Dead-letter the update; while the store refuses, wait (never re-run the handler)."""
        while True:
            try:
                await self.store.fail(self.bot_id, entry.update_id, error, dead=True,
                                      owner=self.identity)
                self._store_failures = 0
                break
            except StoreError as store_exc:
                await self._store_trouble(store_exc, entry)
        self.dead += 1

    async def _store_trouble(self, exc: StoreError, entry: InboxEntry) -> None:
        """The store cannot be used: wait (the chat waits with us) and try again."""
        self._store_failures += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** min(self._store_failures, 6))
        log.error("update %s waits for the store: %s (retrying in %.1f s)", entry.update_id,
                  exc, delay)
        if await sleep_or_stop(self._stop, delay):
            raise _Stopping() from None

    def _completed(self, task: asyncio.Future[Any]) -> None:
        self._completing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not record an update as done (it will be re-run, with its sends "
                      "skipped, by the next holder): %s", task.exception())

    async def _settle_quietly(self, ctx: Context) -> None:
        try:
            await self.outbox.settle(ctx)
        except Exception as exc:  # kept in memory by the outbox; the handler's error matters more
            log.warning("update %s: a call could not be recorded: %s", ctx.update_id, exc)

    async def _finish(self, ctx: Context) -> None:
        try:
            await ctx.finish()
        except Exception as exc:  # answering is best effort; the update's fate is the handler's
            log.warning("update %s: could not answer callback query: %s", ctx.update_id, exc)

    async def stop(self, drain_timeout: float) -> list[int]:
        """Stop taking new work; let running handlers finish for up to ``drain_timeout`` s.
        Returns the update ids not finished (to be released for the next holder)."""
        self._stop.set()
        running = [t for t in self._tasks if not t.done()]
        # Wake idle workers.
        for _ in running:
            self._ready.put_nowait(("stop", 0))
        if running:
            _, pending = await asyncio.wait(running, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        with contextlib.suppress(TimeoutError):  # calls still being recorded
            await asyncio.wait_for(self._none_finalizing.wait(), drain_timeout)
        if self._completing:
            await asyncio.wait(list(self._completing), timeout=max(0.0, deadline - loop.time()))
        left = [e.update_id for q in self._chats.values() for e in q]
        self._chats.clear()
        return left


class _Stopping(Exception):
    """Raised inside a worker when a retry backoff is cut short by shutdown."""
