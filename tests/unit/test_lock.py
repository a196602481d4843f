"""The flock instance lock, with real processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from antiloop._util import Identity
from antiloop.lock import FileLock, default_lock_url, open_lock
from tests.conftest import PYTHON, ROOT

HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from antiloop.lock import FileLock
from antiloop._util import Identity
lock = FileLock({path!r}, Identity("child", __import__("os").getpid(), "{host}"), 7)
assert lock.try_acquire()
print("held", flush=True)
import signal
signal.signal(signal.SIGTERM, lambda *a: (lock.release(), print("released", flush=True), sys.exit(0)))
while True:
    if {beat}:
        lock.beat()
    time.sleep(0.2)
"""


def _child(path: Path, host: str, beat: bool = True) -> subprocess.Popen[str]:
    code = HOLD.format(src=str(ROOT / "src"), path=str(path), host=host, beat=beat)
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_one_holder_at_a_time_and_info_is_readable(tmp_path: Path) -> None:
    path = tmp_path / ".bot_instance.lock"
    a = FileLock(path, Identity("a", 100, "h1"), 7)
    b = FileLock(path, Identity("b", 200, "h1"), 7)
    assert a.try_acquire()
    assert not b.try_acquire()
    st = b.status()
    assert st.held and st.holder is not None
    assert (st.holder.instance_id, st.holder.pid, st.holder.host, st.holder.bot_id) == ("a", 100, "h1", 7)
    assert st.holder.heartbeat_age(time.time()) < 5
    a.release()
    assert path.exists(), "the lock file is never unlinked"
    assert not b.status().held
    assert b.try_acquire()
    b.release()


def test_standby_takes_over_after_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    proc = _child(path, os.uname().nodename)
    try:
        me = FileLock(path, Identity(), 7)
        assert not me.try_acquire()
        assert me.pid_holds_lock(proc.pid)
        assert not me.pid_holds_lock(os.getpid())
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)

        async def wait() -> bool:
            return await asyncio.wait_for(me.acquire(asyncio.Event()), 10)

        assert asyncio.run(wait())
        # The dead holder's info is replaced by ours.
        holder = me.read_holder()
        assert holder is not None and holder.pid == os.getpid()
        me.release()
    finally:
        proc.kill()
        proc.wait()


def test_standby_logs_whom_it_waits_for_once(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    proc = _child(path, "hostA")
    seen: list[str] = []
    try:
        me = FileLock(path, Identity(), 7, poll_interval=0.05)

        async def wait_a_bit() -> bool:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.5, stop.set)
            return await me.acquire(stop, lambda st: seen.append(f"{st.holder.pid}@{st.holder.host}"))  # type: ignore[union-attr]

        assert not asyncio.run(wait_a_bit())
        assert seen == [f"{proc.pid}@hostA"]
    finally:
        proc.kill()
        proc.wait()


def test_takeover_signals_only_the_verified_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    proc = _child(path, os.uname().nodename)
    try:
        me = FileLock(path, Identity(), 7)
        holder = me.request_takeover()
        assert holder is not None and holder.pid == proc.pid
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "released"
        assert proc.wait(5) == 0
        assert me.try_acquire()
        me.release()
    finally:
        proc.kill()
        proc.wait()


def test_takeover_refuses_when_the_recorded_pid_does_not_hold_the_lock(tmp_path: Path) -> None:
    import pytest

    from antiloop.errors import LockError

    path = tmp_path / "x.lock"
    proc = _child(path, os.uname().nodename, beat=False)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # Forge the holder info so that it names an innocent process.
        import json

        data = json.loads(path.read_text())
        data["pid"] = sleeper.pid
        path.write_text(json.dumps(data))
        me = FileLock(path, Identity(), 7)
        with pytest.raises(LockError, match="does not hold the lock"):
            me.request_takeover()
        assert sleeper.poll() is None, "an innocent process was signalled"
    finally:
        sleeper.kill()
        sleeper.wait()
        proc.kill()
        proc.wait()


def test_default_lock_sits_beside_the_store() -> None:
    assert default_lock_url("sqlite:///bot_status.db") == "file:.bot_instance.lock"
    assert default_lock_url("sqlite:////srv/bot/bot.db") == "file:/srv/bot/.bot_instance.lock"
    assert open_lock("file:/tmp/a.lock", Identity(), 1).path == Path("/tmp/a.lock")


def test_a_deleted_lock_file_is_noticed_and_the_holder_stands_down(tmp_path: Path) -> None:
    path = tmp_path / ".bot_instance.lock"
    a = FileLock(path, Identity("a", 100, "h1"), 7)
    assert a.try_acquire()
    a.beat()
    assert a.valid() and not a.lost.is_set()
    path.unlink()  # what the old "fix" told people to do
    b = FileLock(path, Identity("b", 200, "h1"), 7)
    assert b.try_acquire(), "a new file is a new lock: two holders until the first notices"
    a.beat()
    assert a.lost.is_set() and not a.valid()
    assert b.valid()
    b.release()
    a.release()
