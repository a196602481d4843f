"""``file:PATH``: a kernel ``flock`` held for the life of the process.

The file is never unlinked (unlinking splits waiters across inodes); the kernel releases the
lock when the holder dies, SIGKILL included. The holder writes who it is into the file and
refreshes a heartbeat there, so other processes (standbys, ``antiloop status``) can say whom
they wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._util import Clock, Identity
from ..errors import LockError

log = logging.getLogger("antiloop.lock")


@dataclass
class HolderInfo:
    instance_id: str
    pid: int
    host: str
    bot_id: int
    since: str
    since_ts: float
    heartbeat_ts: float

    def heartbeat_age(self, now: float) -> float:
        return max(0.0, now - self.heartbeat_ts)

    def describe(self, now: float) -> str:
        return (f"pid {self.pid} on host {self.host} since {self.since} "
                f"(heartbeat {self.heartbeat_age(now):.1f} s ago, instance {self.instance_id})")


@dataclass
class LockStatus:
    held: bool
    holder: HolderInfo | None
    path: str

    def to_json(self, now: float) -> dict[str, Any]:
        holder = None
        if self.holder is not None and self.held:
            holder = {
                "pid": self.holder.pid,
                "host": self.holder.host,
                "instance_id": self.holder.instance_id,
                "bot_id": self.holder.bot_id,
                "since": self.holder.since,
                "heartbeat_age_s": round(self.holder.heartbeat_age(now), 3),
            }
        return {"held": self.held, "holder": holder, "path": self.path}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


class FileLock:
    """One holder per lock file, across every process on this machine."""

    heartbeat_interval = 1.0

    def __init__(self, path: str | Path, identity: Identity, bot_id: int, *,
                 clock: Clock = time.time, poll_interval: float = 0.2) -> None:
        self.path = Path(path)
        self.identity = identity
        self.bot_id = bot_id
        self._clock = clock
        self.poll_interval = poll_interval
        self._fd: int | None = None
        self._since = 0.0
        self.fence = 0
        self.lost = asyncio.Event()
        """Never set for a kernel lock: the kernel does not take it away from a live process."""

    def __repr__(self) -> str:
        return f"FileLock({str(self.path)!r})"

    @property
    def url(self) -> str:
        return f"file:{self.path}"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockError(
                f"cannot open the lock file {self.path.resolve()}: {exc.strerror}. Check the "
                "directory exists and is writable, or choose another with --lock file:PATH"
            ) from exc

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never blocks."""
        if self._fd is not None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise LockError(f"flock on {self.path} failed: {exc.strerror}") from exc
        self._fd = fd
        self._since = self._clock()
        self.beat()
        return True

    def beat(self) -> None:
        """Refresh the holder info and heartbeat in the file, and check that the path still
        names the file we hold: if someone deleted or replaced it, a new process can take a
        lock on the new file, so this one must stop (``lost``)."""
        if self._fd is None:
            return
        if not self._still_ours():
            if not self.lost.is_set():
                log.error(
                    "the lock file %s was deleted or replaced while this process held it; "
                    "another instance can now take a second lock, so this one stops. Never "
                    "delete the lock file: `antiloop status` tells whether it is held", self.path)
                self.lost.set()
            return
        info = HolderInfo(self.identity.instance_id, self.identity.pid, self.identity.host,
                          self.bot_id, _iso(self._since), self._since, self._clock())
        data = json.dumps(asdict(info)).encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def valid(self) -> bool:
        """True while we hold it (a kernel lock cannot expire under a live process) and the
        lock file was not deleted under us."""
        return self._fd is not None and not self.lost.is_set()

    def _still_ours(self) -> bool:
        assert self._fd is not None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._fd)
        return (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    async def acquire(self, stop: asyncio.Event,
                      on_wait: Callable[[LockStatus], None] | None = None) -> bool:
        """Wait as a hot standby until the lock is ours (True) or ``stop`` is set (False)."""
        told = False
        try:
            while not stop.is_set():
                if self.try_acquire():
                    return True
                if not told:
                    self._register_standby()
                    status = self.status()
                    if status.holder is not None:
                        if on_wait is not None:
                            on_wait(status)
                        told = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval)
            return False
        finally:
            self._unregister_standby()

    # -- standbys: each waiting process leaves a small file beside the lock ------------------
    def _standby_path(self) -> Path:
        return self.path.with_name(f"{self.path.name}.standby-{self.identity.pid}")

    def _register_standby(self) -> None:
        info = {"instance_id": self.identity.instance_id, "pid": self.identity.pid,
                "host": self.identity.host, "bot_id": self.bot_id,
                "since": _iso(self._clock())}
        with contextlib.suppress(OSError):
            self._standby_path().write_text(json.dumps(info))

    def _unregister_standby(self) -> None:
        with contextlib.suppress(OSError):
            self._standby_path().unlink()

    def standbys(self) -> list[dict[str, Any]]:
        """Processes waiting for this lock (on this host), from their standby files; files of
        processes that are gone are removed."""
        out: list[dict[str, Any]] = []
        for f in sorted(self.path.parent.glob(f"{self.path.name}.standby-*")):
            try:
                info = json.loads(f.read_text())
                pid = int(info["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if info.get("host") == self.identity.host and not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    f.unlink()
                continue
            out.append(info)
        return out

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Refresh the heartbeat until the lock is released (or the task cancelled): also
        while the holder drains after ``stop``, so it never looks unresponsive then."""
        while self._fd is not None:
            with contextlib.suppress(OSError):
                self.beat()
            await asyncio.sleep(self.heartbeat_interval)

    def read_holder(self) -> HolderInfo | None:
        for _ in range(3):
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise LockError(f"cannot read the lock file {self.path}: {exc.strerror}") from exc
            if not raw:
                return None
            try:
                return HolderInfo(**json.loads(raw))
            except (ValueError, TypeError):
                time.sleep(0.01)  # caught mid-write: read again
        return None

    def status(self) -> LockStatus:
        """Who holds the lock, if anyone (tested with a shared, non-blocking flock)."""
        if self._fd is not None:
            return LockStatus(True, self.read_holder(), str(self.path))
        if not self.path.exists():
            return LockStatus(False, None, str(self.path))
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return LockStatus(True, self.read_holder(), str(self.path))
            fcntl.flock(fd, fcntl.LOCK_UN)
            return LockStatus(False, self.read_holder(), str(self.path))
        finally:
            os.close(fd)

    def pid_holds_lock(self, pid: int) -> bool:
        """True only if /proc/locks shows ``pid`` holding a flock on this very file (inode)."""
        try:
            st = os.stat(self.path)
            lines = Path("/proc/locks").read_text().splitlines()
        except OSError:
            return False
        dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in lines:
            parts = line.split()
            if "->" in parts:
                continue  # a waiter, not a holder
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[4] == str(pid):
                if parts[5].lower() == dev or parts[5].split(":")[-1] == str(st.st_ino):
                    return True
        return False

    def request_takeover(self) -> HolderInfo | None:
        """Ask a live holder on this host to hand over: SIGTERM to the pid recorded in the lock,
        only after checking that this pid really holds it. Never kills anything by name."""
        status = self.status()
        holder = status.holder
        if not status.held or holder is None:
            return None
        if holder.host != self.identity.host:
            raise LockError(
                f"the lock is held by pid {holder.pid} on another host ({holder.host}); "
                "--takeover only signals holders on this host"
            )
        if not self.pid_holds_lock(holder.pid):
            raise LockError(
                f"the lock file names pid {holder.pid}, but that process does not hold the lock "
                f"on {self.path} (checked in /proc/locks); nothing was signalled"
            )
        os.kill(holder.pid, signal.SIGTERM)
        return holder
