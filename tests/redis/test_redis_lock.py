"""The Redis lock: one holder, fencing tokens, takeover after SIGKILL and after SIGSTOP, renewal and
release by a non-owner, lost/handover events, standbys, and `antiloop status` reading it.
Real Redis on 127.0.0.1 and real subprocesses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from antiloop._util import Identity
from antiloop.lock.redis import LockNotOwnedError, RedisLock
from antiloop.store.redis import RedisStore
from tests.conftest import PYTHON, ROOT, subprocess_env

BOT = 42
HOLDER = str(ROOT / "tests" / "redis" / "holder.py")


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spawn(url: str, mode: str, lease: float = 1.0, **extra: Any) -> subprocess.Popen[str]:
    cfg = {"mode": mode, "url": url, "bot": BOT, "lease": lease, **extra}
    proc = subprocess.Popen([PYTHON, HOLDER, json.dumps(cfg)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=subprocess_env())
    return proc


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the child exited (status {proc.poll()}) without saying anything"
    result: dict[str, Any] = json.loads(line)
    return result


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(10)


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[Any]]]:
    started: list[asyncio.Task[Any]] = []
    yield started
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


# -- in one process ----------------------------------------------------------------------------------


def test_one_holder_fences_increase_and_holder_info_is_readable(url: str) -> None:
    a = RedisLock(url, Identity("a", 100, "h1"), BOT, lease_s=5)
    b = RedisLock(url, Identity("b", 200, "h2"), BOT, lease_s=5)
    assert a.fence == 0 and not a.valid()
    assert a.try_acquire() and a.held and a.valid()
    assert a.try_acquire(), "taking it again while holding it is a no-op"
    assert not b.try_acquire() and not b.held
    st = b.status()
    assert st.held and st.holder is not None
    holder = st.holder
    assert (holder.instance_id, holder.pid, holder.host, holder.bot_id) == ("a", 100, "h1", BOT)
    assert st.fence == a.fence and st.lease_ttl_s is not None and 0 < st.lease_ttl_s <= 5
    assert st.to_json(time.time())["fence"] == a.fence
    assert b.pid_holds_lock(100) is False, "pid 100 runs on h1, not on b's host"
    first = a.fence
    a.release()
    assert not a.held and not b.status().held and b.read_holder() is None
    assert b.try_acquire() and b.fence == first + 1
    assert not a.try_acquire()
    b.release()
    assert a.try_acquire() and a.fence == first + 2
    a.release()


async def _expire(lock: RedisLock) -> None:
    """Make ``lock``'s lease vanish on Redis, as if it had expired."""
    store = RedisStore(lock.url)
    await store.open()
    try:
        await store._redis().delete(lock.key)
    finally:
        await store.close()


async def test_renewal_and_release_by_a_non_owner_fail_clearly(url: str) -> None:
    a = RedisLock(url, Identity("a", 100, "h1"), BOT, lease_s=5)
    b = RedisLock(url, Identity("b", 200, "h2"), BOT, lease_s=5)
    with pytest.raises(LockNotOwnedError, match="does not hold it"):
        await b.renew()
    with pytest.raises(LockNotOwnedError, match="does not hold it"):
        b.beat()

    # a's lease expires unnoticed, b takes the lock; a renews: refused, naming b.
    assert a.try_acquire()
    await _expire(a)
    assert b.try_acquire()
    with pytest.raises(LockNotOwnedError) as info:
        await a.renew()
    assert "pid 200 on host h2" in str(info.value) and f"fence {b.fence}" in str(info.value)
    assert a.lost.is_set() and not a.valid() and not a.held
    a.release()  # known lost: a no-op that leaves b's key alone
    holder = b.read_holder()
    assert holder is not None and holder.instance_id == "b"

    # b's lease expires unnoticed, a takes it; b releases without knowing: refused, a's key kept.
    await _expire(b)
    assert a.try_acquire()
    assert not a.lost.is_set(), "a new holding starts with a clear lost event"
    with pytest.raises(LockNotOwnedError, match="cannot release"):
        b.release()
    assert b.lost.is_set()
    holder = a.read_holder()
    assert holder is not None and holder.instance_id == "a" and holder.fence == a.fence
    a.release()


def test_valid_is_judged_by_local_monotonic_time_alone(url: str) -> None:
    mono = FakeMonotonic()
    a = RedisLock(url, Identity("a", 1, "h"), BOT, lease_s=5, monotonic=mono)
    assert a.try_acquire() and a.valid()
    assert a.margin_s == 1.0
    mono.now += 3.9
    assert a.valid()
    mono.now += 0.2  # 4.1 s after the acquisition was sent: past lease - margin
    assert not a.valid(), "valid() must not trust a lease older than lease - margin"
    assert a.status().held, "Redis still has the key: valid() did not ask it"
    a.release()


async def test_heartbeat_sets_lost_when_the_lease_runs_out_unrenewed(
        url: str, tasks: list[asyncio.Task[Any]]) -> None:
    mono = FakeMonotonic()
    a = RedisLock(url, Identity("a", 1, "h"), BOT, lease_s=0.6, monotonic=mono)
    assert a.try_acquire()
    mono.now += 10  # the process was frozen for 10 s (by the local clock) before renewing
    tasks.append(asyncio.create_task(a.heartbeat(asyncio.Event())))
    await asyncio.wait_for(a.lost.wait(), 5)
    assert a.lost_reason is not None and "ran out before it could be renewed" in a.lost_reason
    assert a.renewals == 0, "it must give up without trying to renew a lease it cannot trust"
    await asyncio.wait_for(tasks[0], 5)


async def test_heartbeat_renews_and_sets_lost_when_someone_else_holds_it(
        url: str, tasks: list[asyncio.Task[Any]]) -> None:
    a = RedisLock(url, Identity("a", 1, "h"), BOT, lease_s=0.6)
    b = RedisLock(url, Identity("b", 2, "h"), BOT, lease_s=5)
    assert a.try_acquire()
    tasks.append(asyncio.create_task(a.heartbeat(asyncio.Event())))
    await wait_until(lambda: a.renewals >= 3, "three renewals")
    assert a.valid() and not b.try_acquire(), "a renewed lease is still a's"
    await _expire(a)
    assert b.try_acquire()
    await asyncio.wait_for(a.lost.wait(), 5)
    assert a.lost_reason is not None and "it is held by pid 2" in a.lost_reason
    assert b.read_holder() is not None and b.read_holder().instance_id == "b"  # type: ignore[union-attr]
    b.release()


async def test_takeover_request_makes_the_holder_hand_over(
        url: str, tasks: list[asyncio.Task[Any]]) -> None:
    a = RedisLock(url, Identity("a", 1, "h1"), BOT, lease_s=0.6)
    b = RedisLock(url, Identity("b", 2, "h2"), BOT, lease_s=0.6, poll_interval=0.05)
    assert b.request_takeover() is None, "nobody holds it"
    assert a.try_acquire()
    a_stop = asyncio.Event()
    tasks.append(asyncio.create_task(a.heartbeat(a_stop)))
    asked = b.request_takeover()
    assert asked is not None and asked.instance_id == "a"
    await asyncio.wait_for(a_stop.wait(), 5)  # the runtime's stop event: a drains, then releases
    assert a.handover.is_set() and a.valid() and not a.lost.is_set()
    a.release()
    assert await asyncio.wait_for(b.acquire(asyncio.Event()), 5)
    assert b.fence == a.fence + 1
    assert not b.handover.is_set()
    b.release()


async def test_standbys_are_listed_and_pruned_when_stale(url: str) -> None:
    a = RedisLock(url, Identity("a", 1, "h1"), BOT, lease_s=5)
    w = RedisLock(url, Identity("w", 2, "h2"), BOT, lease_s=5, standby_ttl_s=0.3)
    assert a.try_acquire()
    await w._register_standby()  # as acquire() does; then it never refreshes
    reader = RedisLock(url, Identity(), BOT, standby_ttl_s=0.3)
    assert [s["instance_id"] for s in reader.standbys()] == ["w"]
    await wait_until(lambda: reader.standbys() == [], "the stale standby to be pruned")
    a.release()


# -- real processes ----------------------------------------------------------------------------------


async def test_a_sigkilled_holder_is_taken_over_after_its_lease(
        url: str, procs: list[subprocess.Popen[str]]) -> None:
    proc = spawn(url, "hold", lease=1.0)
    procs.append(proc)
    child_fence = read_json(proc)["fence"]
    me = RedisLock(url, Identity("me", os.getpid(), "parenthost"), BOT, lease_s=1.0,
                   poll_interval=0.05)
    assert not me.try_acquire()
    st = me.status()
    assert st.holder is not None and st.holder.pid == proc.pid and st.fence == child_fence
    await asyncio.sleep(1.5)
    assert not me.try_acquire(), "the child's heartbeat keeps its 1 s lease alive"
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    assert await asyncio.wait_for(me.acquire(asyncio.Event()), 10)
    assert me.fence == child_fence + 1
    holder = me.read_holder()
    assert holder is not None and holder.pid == os.getpid() and holder.fence == me.fence
    me.release()


async def test_a_sigstopped_holder_resumes_invalid_and_its_writes_are_refused(
        url: str, procs: list[subprocess.Popen[str]], tasks: list[asyncio.Task[Any]]) -> None:
    proc = spawn(url, "pause", lease=1.0)
    procs.append(proc)
    old_fence = read_json(proc)["fence"]
    me = RedisLock(url, Identity("me", os.getpid(), "parenthost"), BOT, lease_s=1.0,
                   poll_interval=0.05)
    assert not me.try_acquire()
    store = RedisStore(url)
    await store.open()
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            # The child cannot renew: its lease runs out on Redis and we take over.
            assert await asyncio.wait_for(me.acquire(asyncio.Event()), 10)
            tasks.append(asyncio.create_task(me.heartbeat(asyncio.Event())))
            assert me.fence == old_fence + 1
            new = dataclasses.replace(me.identity, fence=me.fence)
            got = await store.recover(BOT, new, 60, take_all=True, limit=10)
            assert [(e.update_id, e.attempts) for e in got] == [(1, 2)]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        report = await asyncio.wait_for(asyncio.to_thread(read_json, proc), 20)
        assert proc.wait(10) == 0
        assert report["valid"] is False, "resumed past its lease, valid() must say so at once"
        assert report["lost"] and "ran out" in report["lost"], report
        for write in ("complete", "add_batch"):
            assert f"a newer lock holder (fence {me.fence}) took over" in report[write], report
            assert f"this process (fence {old_fence})" in report[write]
        assert report["renew"] == "LockNotOwnedError"
        assert report["heartbeat_done"] is True
        # Nothing the old holder tried landed: update 1 is still ours and in flight.
        assert await store.counts(BOT) == {"pending": 0, "in_flight": 1, "done": 0, "dead": 0}
        holder = me.read_holder()
        assert me.valid() and holder is not None and holder.instance_id == "me"
        await store.complete(BOT, 1, new)
        assert (await store.counts(BOT))["done"] == 1
    finally:
        await store.close()
        me.release()


async def test_antiloop_status_reads_the_redis_lock_and_its_standbys(
        url: str, procs: list[subprocess.Popen[str]]) -> None:
    me = RedisLock(url, Identity("me", os.getpid(), "parenthost"), BOT, lease_s=30)
    assert me.try_acquire()
    store = RedisStore(url)
    await store.open()
    await store.add_batch(BOT, [{"update_id": 5, "message": {"text": "x"}}], None, 60)
    await store.close()
    standby = spawn(url, "standby", lease=30.0, name="waiter")
    procs.append(standby)
    assert read_json(standby) == {"waiting": 1}
    out = await asyncio.to_thread(
        subprocess.run, [PYTHON, "-m", "antiloop", "status", "--json", "--store", url,
                         "--lock", url], capture_output=True, text=True, timeout=30,
        env=subprocess_env())
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    lock = status["lock"]
    assert status["bot_id"] == BOT and status["inbox"]["pending"] == 1
    assert lock["held"] and lock["state"] == "alive" and lock["fence"] == me.fence
    assert lock["holder"]["pid"] == os.getpid() and lock["holder"]["host"] == "parenthost"
    assert [s["instance_id"] for s in lock["standbys"]] == ["waiter"]
    me.release()
    assert standby.wait(10) == 0, "the standby takes the lock once it is released"
