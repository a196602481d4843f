"""``sqlite:///bot_status.db``: the embedded default. One file, WAL, one writer thread.

Every write goes through a queue; whatever has queued while the previous transaction ran is
committed in the next one (group commit), so a getUpdates batch is one transaction and a
thousand handlers completing at once cost a handful of commits, not a thousand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import updates as U
from .._util import Clock, Identity
from ..errors import StoreError
from .base import CLAIMED, DONE, RECEIVED, DeadLetter, InboxEntry

T = TypeVar("T")
log = logging.getLogger("antiloop.store")
Op = Callable[[sqlite3.Connection], Any]

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE inbox (
        bot_id INTEGER NOT NULL,
        update_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        raw TEXT,
        order_key INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL,
        received_at REAL NOT NULL,
        finished_at REAL,
        claimed_by TEXT,
        claimed_pid INTEGER,
        claimed_host TEXT,
        finished_by TEXT,
        error TEXT,
        PRIMARY KEY (bot_id, update_id)
    ) WITHOUT ROWID;
    CREATE INDEX inbox_open ON inbox (bot_id, update_id) WHERE state IN ('received', 'claimed');
    CREATE INDEX inbox_done ON inbox (bot_id, finished_at) WHERE state = 'done';
    CREATE TABLE dead (
        bot_id INTEGER NOT NULL,
        update_id INTEGER NOT NULL,
        raw TEXT,
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,
        died_at REAL NOT NULL,
        PRIMARY KEY (bot_id, update_id)
    ) WITHOUT ROWID;
    CREATE TABLE sends (
        bot_id INTEGER NOT NULL,
        update_id INTEGER NOT NULL,
        ordinal INTEGER NOT NULL,
        method TEXT NOT NULL,
        result TEXT,
        sent_at REAL NOT NULL,
        PRIMARY KEY (bot_id, update_id, ordinal)
    ) WITHOUT ROWID;
    CREATE TABLE windows (
        bot_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (bot_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX windows_age ON windows (seen_at);
    CREATE TABLE suppressed (
        bot_id INTEGER NOT NULL,
        reason TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (bot_id, reason)
    ) WITHOUT ROWID;
    """,
}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def path_from_url(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db`` (relative to the cwd); ``sqlite:////abs.db`` -> ``/abs.db``."""
    if not url.startswith("sqlite:///"):
        raise StoreError(f"{url!r} is not a SQLite URL; use sqlite:///relative.db or sqlite:////abs/path.db")
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    if not rest:
        raise StoreError(f"{url!r} names no file; use sqlite:///bot_status.db")
    return Path(rest)


class SQLiteStore:
    """The Store in one SQLite file (WAL). Safe to open from several processes; the lock holder
    writes, others (standbys, ``antiloop status``) read."""

    def __init__(self, url: str = "sqlite:///bot_status.db", *, clock: Clock = time.time,
                 busy_timeout_s: float = 5.0) -> None:
        self.url = url
        self.path = path_from_url(url)
        query = url.split("?", 1)[1] if "?" in url else ""
        opts = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        self.synchronous = opts.get("synchronous", "normal").upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"{url!r}: synchronous must be off, normal, full or extra")
        self._clock = clock
        self._busy_ms = int(busy_timeout_s * 1000)
        self._conn: sqlite3.Connection | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._rows: dict[str, list[tuple[tuple[Any, ...], asyncio.Future[Any] | None]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._windows: dict[int, dict[str, float]] = {}  # bots this process writes alone
        self._closing = False
        self._dirty_windows: list[tuple[int, str, float]] = []

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._conn is not None:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="antiloop-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._pool, self._connect)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        where = path.resolve() if path.parent.exists() else path
        if not path.parent.exists():
            raise StoreError(
                f"the store directory {path.parent.resolve()} does not exist: create it, or "
                f"choose another file with --store sqlite:///path/to/bot_status.db"
            )
        if not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store file {where}: {exc.strerror}. Check the "
                    "directory's permissions or choose another --store"
                ) from exc
        # Several processes starting together race to create the schema and switch the file to
        # WAL; SQLite answers some of those races with SQLITE_BUSY at once, without waiting, so
        # setting up is retried until the busy timeout.
        deadline = time.monotonic() + self._busy_ms / 1000
        delay = 0.02
        while True:
            conn = None
            try:
                conn = sqlite3.connect(path, timeout=self._busy_ms / 1000, isolation_level=None,
                                       check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                # Only a process that must change something takes the write lock: a standby or
                # `antiloop status` opening a current database beside a busy holder never waits.
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                conn.execute("PRAGMA foreign_keys = OFF")
                self._migrate(conn)
                return conn
            except sqlite3.OperationalError as exc:
                if conn is not None:
                    conn.close()
                busy = "locked" in str(exc).lower() or "busy" in str(exc).lower()
                if not busy or time.monotonic() + delay > deadline:
                    raise self._explain(exc) from exc
                time.sleep(delay)  # in the store's own thread, never the event loop's
                delay = min(delay * 2, 0.5)
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                raise self._explain(exc) from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if _schema_version(conn) == SCHEMA_VERSION:
            return  # current: a plain read, no write lock
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version == 0:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if tables - {"meta"}:
                    raise StoreError(
                        f"{self.path.resolve()} is an SQLite database, but not antiloop's "
                        f"(tables: {', '.join(sorted(tables - {'meta'}))}). Choose another file "
                        "with --store sqlite:///bot_status.db"
                    )
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path.resolve()} has schema version {version}, written by a newer "
                    f"antiloop (this one knows up to {SCHEMA_VERSION}); upgrade antiloop"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[v].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(v),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _explain(self, exc: sqlite3.Error) -> StoreError:
        """Turn an SQLite error into one that names the file and the fix."""
        where = self.path.resolve()
        msg = str(exc).lower()
        if "readonly" in msg or "read-only" in msg:
            return StoreError(
                f"the store file {where} is read-only ({exc}): give this user write access to "
                "the file and its directory (chmod u+w), or choose another --store"
            )
        if "locked" in msg or "busy" in msg:
            return StoreError(
                f"the store file {where} stayed locked by another process for more than "
                f"{self._busy_ms / 1000:.0f} s ({exc}); find it with `fuser {where}`"
            )
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            return StoreError(
                f"the store file {where} is corrupt or not a database ({exc}). Move it aside "
                f"(mv {where} {where}.corrupt) and start again: the inbox starts empty and "
                "Telegram re-delivers what was not confirmed"
            )
        if "disk i/o" in msg and self._not_writable():
            return StoreError(
                f"the store file {where} cannot be written ({exc}): it is read-only or "
                f"immutable (check `ls -l {where}` and `lsattr {where}`, also its -wal file); "
                "make it writable again, or choose another --store. Nothing is confirmed to "
                "Telegram until it is stored"
            )
        if "disk is full" in msg or "disk i/o" in msg or "file too large" in msg:
            return StoreError(
                f"cannot write the store file {where}: {exc}. Free disk space (or raise the "
                "file-size limit); nothing is confirmed to Telegram until it is stored"
            )
        if "unable to open" in msg:
            return StoreError(
                f"cannot open the store file {where} ({exc}): check that its directory exists "
                "and is writable"
            )
        return StoreError(f"the store file {where} failed: {exc}")

    def _not_writable(self) -> bool:
        """Is the database (or its WAL) refusing writes for a reason other than space?"""
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
                    return True
                continue
            os.close(fd)
        return False

    async def close(self) -> None:
        """Commit what is queued, refuse new writes (StoreError), then close."""
        self._closing = True
        while self._flusher is not None and not self._flusher.done():
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._conn is not None and self._pool is not None:
            conn = self._conn
            self._conn = None
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- the write queue (group commit) and reads -----------------------------------------------
    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        fut: asyncio.Future[T] = self._enqueue()
        self._queue.append((op, fut))
        return await fut

    def _enqueue(self) -> asyncio.Future[Any]:
        self._start_flusher()
        return asyncio.get_running_loop().create_future()

    def _start_flusher(self) -> None:
        if self._conn is None or self._closing:
            raise StoreError(f"the store {self.path} is not open (or closing)")
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Commit everything queued so far in one transaction; repeat while more arrives."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let the writers of this loop iteration queue up
        while self._queue or self._rows or self._dirty_windows:
            if self._dirty_windows:  # persisted behind, with whatever commits next
                self._rows.setdefault(_UPSERT_WINDOW, []).extend(
                    (row, None) for row in self._dirty_windows)
                self._dirty_windows = []
            batch = _Batch(self._queue, self._rows)
            self._queue, self._rows = [], {}
            try:
                results = await loop.run_in_executor(self._pool, self._run_batch, batch)
            except asyncio.CancelledError:
                for fut in batch.futures():
                    if not fut.done():
                        fut.set_exception(StoreError(
                            f"the store {self.path} was shut down during a commit; the write "
                            "may or may not have been committed"))
                raise
            except BaseException as exc:  # the whole transaction failed
                err = self._explain(exc) if isinstance(exc, sqlite3.Error) else exc
                for fut in batch.futures():
                    if not fut.done():
                        fut.set_exception(err)
                if _UPSERT_WINDOW in batch.rows:
                    log.warning("windows could not be persisted (they hold in this process): %s",
                                err)
                continue
            for fut in batch.row_futures():
                if not fut.done():
                    fut.set_result(None)
            for (_, fut), (ok, value) in zip(batch.ops, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(self._explain(value) if isinstance(value, sqlite3.Error) else value)

    def _run_batch(self, batch: _Batch) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in batch.rows.items():
                conn.executemany(sql, [r for r, _ in rows])
            results = [(True, op(conn)) for op, _ in batch.ops]
            conn.execute("COMMIT")
            return results
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _is_io(exc):
                raise
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        # One operation failed: run again with a savepoint around each, so only it fails.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in batch.rows.items():
                conn.executemany(sql, [r for r, _ in rows])
            out: list[tuple[bool, Any]] = []
            for op, _ in batch.ops:
                conn.execute("SAVEPOINT op")
                try:
                    out.append((True, op(conn)))
                    conn.execute("RELEASE op")
                except Exception as exc:
                    if isinstance(exc, sqlite3.OperationalError) and _is_io(exc):
                        raise
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    out.append((False, exc))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def _queue_row(self, sql: str, row: tuple[Any, ...]) -> asyncio.Future[Any]:
        """A one-statement write, batched with its kind into one executemany; the future
        resolves once committed."""
        fut = self._enqueue()
        self._rows.setdefault(sql, []).append((row, fut))
        return fut

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreError(f"the store {self.path} is not open")
        conn = self._conn

        def run() -> T:
            return op(conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, run)
        except sqlite3.Error as exc:
            raise self._explain(exc) from exc

    # -- inbox -----------------------------------------------------------------------------------
    async def add_batch(
        self, bot_id: int, updates: list[dict[str, Any]], owner: Identity | None, lease_s: float
    ) -> list[InboxEntry]:
        now = self._clock()
        good: list[tuple[int, dict[str, Any], str]] = []
        bad: list[tuple[Any, str]] = []
        for update in updates:
            try:
                good.append((U.validate(update), update, _dumps(update)))
            except U.MalformedUpdate as exc:
                bad.append((update, str(exc)))

        def op(conn: sqlite3.Connection) -> list[InboxEntry]:
            out: list[InboxEntry] = []
            state = CLAIMED if owner else RECEIVED
            attempts = 1 if owner else 0
            redelivered = 0
            ids = [uid for uid, _, _ in good]
            dead = {int(r[0]) for r in conn.execute(
                f"SELECT update_id FROM dead WHERE bot_id=? AND update_id IN "
                f"({','.join('?' * len(ids))})", (bot_id, *ids))} if ids else set()
            for uid, update, raw in good:
                if uid in dead:
                    redelivered += 1
                    continue
                key = U.order_key(update)
                cur = conn.execute(
                    "INSERT INTO inbox(bot_id, update_id, state, raw, order_key, attempts, "
                    "lease_until, received_at, claimed_by, claimed_pid, claimed_host) "
                    "VALUES(?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (bot_id, uid, state, raw, key, attempts, now + lease_s if owner else None,
                     now, owner.instance_id if owner else None, owner.pid if owner else None,
                     owner.host if owner else None),
                )
                if cur.rowcount == 1:
                    out.append(InboxEntry(bot_id, uid, update, key, state, attempts, now))
                else:
                    redelivered += 1
            for update, reason in bad:
                given = update.get("update_id") if isinstance(update, dict) else None
                if isinstance(given, int) and not isinstance(given, bool):
                    bad_id = given
                else:  # malformed ones without an id get ids below zero
                    low = conn.execute("SELECT MIN(update_id) FROM dead WHERE bot_id=?",
                                       (bot_id,)).fetchone()[0]
                    bad_id = min(int(low or 0), 0) - 1
                raw = _dumps(update) if isinstance(update, dict) else _dumps({"value": repr(update)[:1000]})
                conn.execute(
                    "INSERT OR REPLACE INTO dead(bot_id, update_id, raw, attempts, error, died_at) "
                    "VALUES(?,?,?,0,?,?)", (bot_id, bad_id, raw, f"malformed: {reason}", now))
                _bump(conn, bot_id, "malformed", 1)
            if redelivered:
                _bump(conn, bot_id, "redelivered", redelivered)
            return out

        return await self._write(op)

    async def recover(
        self, bot_id: int, owner: Identity, lease_s: float, *, take_all: bool, limit: int
    ) -> list[InboxEntry]:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(
                "SELECT update_id, state, raw, order_key, attempts, received_at, lease_until, "
                "claimed_by FROM inbox WHERE bot_id=? AND state IN ('received','claimed') "
                "ORDER BY update_id LIMIT ?", (bot_id, limit * 4 if not take_all else limit),
            ).fetchall()
            out: list[InboxEntry] = []
            for uid, state, raw, key, attempts, received_at, lease_until, by in rows:
                if state == CLAIMED and not take_all:
                    if by == owner.instance_id or (lease_until or 0) >= now:
                        continue
                conn.execute(
                    "UPDATE inbox SET state='claimed', attempts=attempts+1, lease_until=?, "
                    "claimed_by=?, claimed_pid=?, claimed_host=? WHERE bot_id=? AND update_id=?",
                    (now + lease_s, owner.instance_id, owner.pid, owner.host, bot_id, uid))
                out.append(InboxEntry(bot_id, uid, json.loads(raw), key, CLAIMED, attempts + 1,
                                      received_at))
                if len(out) >= limit:
                    break
            return out

        return await self._write(op)

    async def complete(self, bot_id: int, update_id: int, owner: Identity) -> None:
        await self.complete_nowait(bot_id, update_id, owner)

    def complete_nowait(self, bot_id: int, update_id: int, owner: Identity) -> asyncio.Future[Any]:
        """``complete`` queued for the next group commit; the future resolves once committed.
        (No coroutine, no task: this is on the path of every update.)"""
        return self._queue_row(_COMPLETE, (self._clock(), owner.instance_id, bot_id, update_id))

    async def fail(
        self, bot_id: int, update_id: int, error: str, *, dead: bool, owner: Identity
    ) -> int:
        now = self._clock()
        error = error[:2000]

        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT attempts, raw FROM inbox WHERE bot_id=? AND update_id=?",
                               (bot_id, update_id)).fetchone()
            if row is None:
                return 0
            attempts, raw = int(row[0]), row[1]
            if dead:
                conn.execute(
                    "UPDATE inbox SET state='dead', error=?, finished_at=?, finished_by=?, "
                    "lease_until=NULL WHERE bot_id=? AND update_id=?",
                    (error, now, owner.instance_id, bot_id, update_id))
                conn.execute(
                    "INSERT OR REPLACE INTO dead(bot_id, update_id, raw, attempts, error, died_at) "
                    "VALUES(?,?,?,?,?,?)", (bot_id, update_id, raw, attempts, error, now))
            else:
                conn.execute(
                    "UPDATE inbox SET error=?, attempts=attempts+1 WHERE bot_id=? AND update_id=?",
                    (error, bot_id, update_id))
                attempts += 1
            return attempts

        return await self._write(op)

    async def release(self, bot_id: int, update_ids: list[int],
                      owner: Identity | None = None) -> None:
        if not update_ids:
            return
        by = owner.instance_id if owner is not None else None

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE inbox SET state='received', lease_until=NULL, attempts=MAX(attempts-1, 0) "
                "WHERE bot_id=? AND update_id=? AND state='claimed' AND (? IS NULL OR claimed_by=?)",
                [(bot_id, u, by, by) for u in update_ids])

        await self._write(op)

    # -- ledger of sends -------------------------------------------------------------------------
    async def sends_for(self, bot_id: int, update_id: int) -> dict[int, Any]:
        def op(conn: sqlite3.Connection) -> dict[int, Any]:
            rows = conn.execute(
                "SELECT ordinal, result FROM sends WHERE bot_id=? AND update_id=?",
                (bot_id, update_id)).fetchall()
            return {int(o): (json.loads(r) if r is not None else None) for o, r in rows}

        return await self._read(op)

    async def record_send(
        self, bot_id: int, update_id: int, ordinal: int, method: str, result: Any
    ) -> None:
        await self.record_send_nowait(bot_id, update_id, ordinal, method, result)

    def record_send_nowait(self, bot_id: int, update_id: int, ordinal: int, method: str,
                           result: Any) -> asyncio.Future[Any]:
        """``record_send`` queued for the next group commit; resolves once committed."""
        return self._queue_row(_RECORD_SEND, (bot_id, update_id, ordinal, method, _dumps(result),
                                              self._clock()))

    # -- windows and counters -----------------------------------------------------------------------
    async def become_exclusive(self, bot_id: int) -> None:
        """This process now holds the bot's instance lock, so it is the only one writing the
        bot's windows: load the recent ones and answer ``hit_window`` from memory from now on,
        persisting each new hit behind (in the next group commit) for the next holder."""
        since = self._clock() - _EXCLUSIVE_HORIZON_S

        def op(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            return [(str(k), float(t)) for k, t in conn.execute(
                "SELECT key, seen_at FROM windows WHERE bot_id=? AND seen_at>=?", (bot_id, since))]

        rows = await self._read(op)
        cache = self._windows.setdefault(bot_id, {})
        cache.update(rows)

    async def hit_window(self, bot_id: int, key: str, window_s: float) -> bool:
        now = self._clock()
        cache = self._windows.get(bot_id)
        if cache is not None:
            seen = cache.get(key)
            if seen is not None and now - seen < window_s:
                return True
            cache[key] = now
            self._start_flusher()
            self._dirty_windows.append((bot_id, key, now))
            return False

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO windows(bot_id, key, seen_at) VALUES(?,?,?) "
                "ON CONFLICT(bot_id, key) DO UPDATE SET seen_at=excluded.seen_at "
                "WHERE windows.seen_at <= ?", (bot_id, key, now, now - window_s))
            return cur.rowcount == 0

        return await self._write(op)

    async def count_suppressed(self, bot_id: int, reason: str, n: int = 1) -> None:
        def op(conn: sqlite3.Connection) -> None:
            _bump(conn, bot_id, reason, n)

        await self._write(op)

    # -- operations -----------------------------------------------------------------------------------
    async def counts(self, bot_id: int) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            out = {"pending": 0, "in_flight": 0, "done": 0, "dead": 0}
            names = {RECEIVED: "pending", CLAIMED: "in_flight", DONE: "done"}
            for state, n in conn.execute(
                    "SELECT state, COUNT(*) FROM inbox WHERE bot_id=? GROUP BY state", (bot_id,)):
                if state in names:
                    out[names[state]] = int(n)
            out["dead"] = int(conn.execute("SELECT COUNT(*) FROM dead WHERE bot_id=?",
                                           (bot_id,)).fetchone()[0])
            return out

        return await self._read(op)

    async def suppressed(self, bot_id: int) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            return {str(r): int(n) for r, n in conn.execute(
                "SELECT reason, n FROM suppressed WHERE bot_id=? ORDER BY reason", (bot_id,))}

        return await self._read(op)

    async def dead_letters(self, bot_id: int, limit: int = 100) -> list[DeadLetter]:
        def op(conn: sqlite3.Connection) -> list[DeadLetter]:
            return [
                DeadLetter(bot_id, int(u), json.loads(raw) if raw else None, int(a), str(e), float(t))
                for u, raw, a, e, t in conn.execute(
                    "SELECT update_id, raw, attempts, error, died_at FROM dead WHERE bot_id=? "
                    "ORDER BY update_id LIMIT ?", (bot_id, limit))
            ]

        return await self._read(op)

    async def retry_dead(self, bot_id: int, update_id: int) -> bool:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT raw, error FROM dead WHERE bot_id=? AND update_id=?",
                               (bot_id, update_id)).fetchone()
            if row is None:
                return False
            raw, error = row
            if str(error).startswith("malformed"):
                raise StoreError(f"dead letter {update_id} is a malformed update and would fail "
                                 f"again; drop it with `antiloop dead-letters drop {update_id}`")
            conn.execute("DELETE FROM dead WHERE bot_id=? AND update_id=?", (bot_id, update_id))
            update = json.loads(raw)
            conn.execute(
                "INSERT INTO inbox(bot_id, update_id, state, raw, order_key, attempts, received_at) "
                "VALUES(?,?,'received',?,?,0,?) ON CONFLICT(bot_id, update_id) DO UPDATE SET "
                "state='received', raw=excluded.raw, attempts=0, error=NULL, finished_at=NULL",
                (bot_id, update_id, raw, U.order_key(update), now))
            return True

        return await self._write(op)

    async def drop_dead(self, bot_id: int, update_id: int) -> bool:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM dead WHERE bot_id=? AND update_id=?", (bot_id, update_id))
            if cur.rowcount:
                conn.execute("UPDATE inbox SET state='done', raw=NULL, finished_at=? WHERE "
                             "bot_id=? AND update_id=?", (now, bot_id, update_id))
            return cur.rowcount > 0

        return await self._write(op)

    async def purge(self, bot_id: int, older_than: float, limit: int) -> int:
        window_cutoff = self._clock() - _EXCLUSIVE_HORIZON_S
        cache = self._windows.get(bot_id)
        if cache:
            for key in [k for k, t in cache.items() if t < window_cutoff]:
                del cache[key]

        def op(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute(
                "SELECT update_id FROM inbox WHERE bot_id=? AND state='done' AND finished_at<? "
                "LIMIT ?", (bot_id, older_than, limit))]
            conn.executemany("DELETE FROM inbox WHERE bot_id=? AND update_id=?",
                             [(bot_id, u) for u in ids])
            conn.executemany("DELETE FROM sends WHERE bot_id=? AND update_id=?",
                             [(bot_id, u) for u in ids])
            conn.execute(
                "DELETE FROM windows WHERE bot_id=? AND key IN (SELECT key FROM windows "
                "WHERE bot_id=? AND seen_at<? LIMIT ?)", (bot_id, bot_id, window_cutoff, limit))
            return len(ids)

        return await self._write(op)

    async def reset(self, bot_id: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            for table in ("inbox", "dead", "sends", "windows", "suppressed"):
                conn.execute(f"DELETE FROM {table} WHERE bot_id=?", (bot_id,))

        await self._write(op)

    async def bot_ids(self) -> list[int]:
        def op(conn: sqlite3.Connection) -> list[int]:
            return [int(r[0]) for r in conn.execute(
                "SELECT DISTINCT bot_id FROM inbox UNION SELECT DISTINCT bot_id FROM dead")]

        return await self._read(op)


_EXCLUSIVE_HORIZON_S = 3600.0
"""Windows younger than this are carried over to a new lock holder (older ones are purged)."""
_UPSERT_WINDOW = (
    "INSERT INTO windows(bot_id, key, seen_at) VALUES(?,?,?) "
    "ON CONFLICT(bot_id, key) DO UPDATE SET seen_at=excluded.seen_at"
)
_COMPLETE = (
    "UPDATE inbox SET state='done', raw=NULL, finished_at=?, finished_by=?, lease_until=NULL "
    "WHERE bot_id=? AND update_id=?"
)
_RECORD_SEND = (
    "INSERT OR REPLACE INTO sends(bot_id, update_id, ordinal, method, result, sent_at) "
    "VALUES(?,?,?,?,?,?)"
)


class _Batch:
    """What one transaction commits: batched one-statement rows, then arbitrary operations."""

    __slots__ = ("ops", "rows")

    def __init__(self, ops: list[tuple[Op, asyncio.Future[Any]]],
                 rows: dict[str, list[tuple[tuple[Any, ...], asyncio.Future[Any] | None]]]) -> None:
        self.ops = ops
        self.rows = rows

    def row_futures(self) -> list[asyncio.Future[Any]]:
        return [f for rows in self.rows.values() for _, f in rows if f is not None]

    def futures(self) -> list[asyncio.Future[Any]]:
        return [f for _, f in self.ops] + self.row_futures()


def _schema_version(conn: sqlite3.Connection) -> int | None:
    """The schema version recorded in the file, read without a write lock (None: no meta)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return int(row[0]) if row else None


def _bump(conn: sqlite3.Connection, bot_id: int, reason: str, n: int) -> None:
    conn.execute(
        "INSERT INTO suppressed(bot_id, reason, n) VALUES(?,?,?) "
        "ON CONFLICT(bot_id, reason) DO UPDATE SET n = n + excluded.n", (bot_id, reason, n))


def _is_io(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return any(s in msg for s in ("disk", "readonly", "locked", "i/o", "full", "too large"))
