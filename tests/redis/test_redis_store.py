"""The Redis store beyond the shared contract (tests/unit/test_store.py runs that on Redis too):
fencing, key layout, counters, chunked recovery, errors, URLs. Real Redis on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable

import pytest
from redis.client import Redis
from redis.crc import key_slot

from antiloop._util import Identity
from antiloop.errors import ConfigError, LockError, StoreError
from antiloop.lock import open_lock
from antiloop.lock.redis import RedisLock
from antiloop.store import MemoryStore, Store, open_store
from antiloop.store.redis import RedisStore, parse_redis_url
from tests.conftest import FakeClock
from tests.redis.keys import keys_of
from tests.unit.test_store import BOT, ME, OTHER, msg


def sync_client(redis_url: str) -> Redis:
    return Redis.from_url(redis_url, decode_responses=True)


# -- fencing --------------------------------------------------------------------------------------


async def test_writes_with_a_stale_fence_are_refused_and_change_nothing(
        rstore: RedisStore, url: str) -> None:
    a = RedisLock(url, Identity("a", 1, "h1"), BOT, lease_s=5)
    b = RedisLock(url, Identity("b", 2, "h2"), BOT, lease_s=5)
    assert a.try_acquire()
    old = dataclasses.replace(a.identity, fence=a.fence)
    await rstore.add_batch(BOT, [msg(1), msg(2), msg(3)], old, 60)
    a.release()
    assert b.try_acquire()
    new = dataclasses.replace(b.identity, fence=b.fence)
    assert b.fence == a.fence + 1
    before = await rstore.counts(BOT)

    refused: list[Callable[[], Awaitable[object]]] = [
        lambda: rstore.add_batch(BOT, [msg(4)], old, 60),
        lambda: rstore.recover(BOT, old, 60, take_all=True, limit=10),
        lambda: rstore.complete(BOT, 1, old),
        lambda: rstore.fail(BOT, 2, "boom", dead=True, owner=old),
        lambda: rstore.fail(BOT, 2, "boom", dead=False, owner=old),
        lambda: rstore.release(BOT, [3], owner=old),
    ]
    for call in refused:
        with pytest.raises(LockError) as info:
            await call()
        text = str(info.value)
        assert f"newer lock holder (fence {b.fence})" in text, text
        assert f"(fence {a.fence})" in text and "must stop" in text
    assert await rstore.counts(BOT) == before
    assert (await rstore.dead_letters(BOT)) == []

    # The current holder's writes go through.
    got = await rstore.recover(BOT, new, 60, take_all=True, limit=10)
    assert [e.update_id for e in got] == [1, 2, 3]
    await rstore.complete(BOT, 1, new)
    assert [e.update_id for e in await rstore.add_batch(BOT, [msg(4)], new, 60)] == [4]
    assert await rstore.counts(BOT) == {"pending": 0, "in_flight": 3, "done": 1, "dead": 0}
    b.release()


async def test_a_fence_above_the_counter_means_redis_lost_its_data(rstore: RedisStore,
                                                                   url: str) -> None:
    lock = RedisLock(url, Identity("a", 1, "h"), BOT, lease_s=5)
    assert lock.try_acquire()
    ahead = Identity("z", 9, "h", fence=lock.fence + 100)
    with pytest.raises(LockError, match="Redis lost its data"):
        await rstore.add_batch(BOT, [msg(1)], ahead, 60)
    lock.release()
    # A process with a fence on a Redis that never saw a lock (flushed, restarted, or another
    # server) is refused too: its token proves nothing here.
    with pytest.raises(LockError, match="different Redis servers"):
        await rstore.complete(BOT + 1, 1, Identity("y", 9, "h", fence=7))


async def test_fence_zero_is_not_fenced_and_the_file_lock_keeps_working(rstore: RedisStore) -> None:
    assert ME.fence == 0
    assert [e.update_id for e in await rstore.add_batch(BOT, [msg(1)], ME, 60)] == [1]
    await rstore.complete(BOT, 1, ME)
    assert (await rstore.counts(BOT))["done"] == 1


async def test_release_with_an_owner_gives_back_only_its_own_claims(rstore: RedisStore) -> None:
    await rstore.add_batch(BOT, [msg(1)], ME, 60)
    await rstore.add_batch(BOT, [msg(2)], OTHER, 60)
    await rstore.release(BOT, [1, 2], owner=ME)
    assert await rstore.counts(BOT) == {"pending": 1, "in_flight": 1, "done": 0, "dead": 0}
    got = await rstore.recover(BOT, OTHER, 60, take_all=False, limit=10)
    assert [e.update_id for e in got] == [1]


# -- layout, JSON, counters -------------------------------------------------------------------------


async def test_a_bots_keys_share_one_cluster_slot_and_hold_json(
        rstore: RedisStore, redis_url: str, prefix: str, clock: FakeClock) -> None:
    await rstore.add_batch(BOT, [msg(1), msg(2, text="ünï")], ME, 60)
    await rstore.add_batch(BOT, ["garbage"], None, 60)  # type: ignore[list-item]
    await rstore.record_send(BOT, 1, 1, "sendMessage", {"message_id": 10})
    await rstore.hit_window(BOT, "press:1", 5)
    await rstore.count_suppressed(BOT, "debounced")
    await rstore.complete(BOT, 1, ME)
    keys = [k for k in keys_of(redis_url, prefix) if k != f"{prefix}:bots"]
    assert keys and all(k.startswith(f"{prefix}:{{{BOT}}}:") for k in keys), keys
    assert len({key_slot(k.encode()) for k in keys}) == 1
    r = sync_client(redis_url)
    try:
        entry = r.hgetall(f"{prefix}:{{{BOT}}}:e:2")
        assert json.loads(entry["raw"]) == msg(2, text="ünï")
        assert (entry["st"], entry["at"], entry["ow"]) == ("claimed", "1", "me")
        assert "raw" not in r.hgetall(f"{prefix}:{{{BOT}}}:e:1"), "done entries drop the update"
        assert json.loads(r.hget(f"{prefix}:{{{BOT}}}:s:1", "1")) == {"message_id": 10}
        dead = r.hgetall(f"{prefix}:{{{BOT}}}:d:-1")
        assert json.loads(dead["raw"]) == {"value": "'garbage'"}
        assert r.smembers(f"{prefix}:bots") == {str(BOT)}
    finally:
        r.close()


async def _mixed_history(store: Store, clock: FakeClock) -> list[list[int]]:
    """Every kind of state change; returns what each recover handed out."""
    out = []
    await store.add_batch(BOT, [msg(i) for i in range(1, 21)], ME, 60)
    await store.add_batch(BOT, [msg(i) for i in range(15, 31)], None, 60)
    for i in range(1, 6):
        await store.complete(BOT, i, ME)
    await store.complete(BOT, 5, ME)  # twice: still one done
    await store.fail(BOT, 6, "x", dead=True, owner=ME)
    await store.fail(BOT, 7, "x", dead=True, owner=ME)
    await store.retry_dead(BOT, 6)
    await store.drop_dead(BOT, 7)
    await store.release(BOT, [8, 9, 21])
    clock.advance(61)
    out.append([e.update_id for e in await store.recover(BOT, OTHER, 60, take_all=False, limit=4)])
    await store.add_batch(BOT, [{"update_id": 99}], ME, 60)
    clock.advance(100)
    await store.purge(BOT, clock() - 50, limit=3)
    out.append([e.update_id for e in await store.recover(BOT, ME, 60, take_all=False, limit=100)])
    return out


async def test_counts_are_counters_that_agree_with_the_entries_and_the_memory_store(
        rstore: RedisStore, redis_url: str, prefix: str, clock: FakeClock) -> None:
    reference = MemoryStore(clock=FakeClock(clock()))
    assert await _mixed_history(rstore, clock) == await _mixed_history(
        reference, reference._clock)  # type: ignore[arg-type]
    r = sync_client(redis_url)
    try:
        states = [r.hget(k, "st") for k in r.scan_iter(match=f"{prefix}:{{{BOT}}}:e:*")]
        dead = len(list(r.scan_iter(match=f"{prefix}:{{{BOT}}}:d:*")))
    finally:
        r.close()
    scanned = {"pending": states.count("received"), "in_flight": states.count("claimed"),
               "done": states.count("done"), "dead": dead}
    assert await rstore.counts(BOT) == scanned == await reference.counts(BOT)
    assert scanned == {"pending": 0, "in_flight": 24, "done": 3, "dead": 1}
    assert await rstore.suppressed(BOT) == await reference.suppressed(BOT)
    assert ([(d.update_id, d.error) for d in await rstore.dead_letters(BOT)]
            == [(d.update_id, d.error) for d in await reference.dead_letters(BOT)])


async def test_recover_goes_past_many_own_claims_and_large_limits(rstore: RedisStore) -> None:
    # 2100 live claims of ours come first (skipped without take_all), then 5 runnable ones: the
    # scan continues chunk by chunk until it finds them.
    await rstore.add_batch(BOT, [msg(i) for i in range(1, 2101)], ME, 60)
    await rstore.add_batch(BOT, [msg(i) for i in range(2101, 2106)], None, 60)
    got = await rstore.recover(BOT, ME, 60, take_all=False, limit=10)
    assert [e.update_id for e in got] == list(range(2101, 2106))
    # take_all with a limit above one chunk: in update order, each claimed once.
    got = await rstore.recover(BOT, OTHER, 60, take_all=True, limit=1200)
    assert [e.update_id for e in got] == list(range(1, 1201))
    assert all(e.attempts == 2 for e in got)
    rest = await rstore.recover(BOT, OTHER, 60, take_all=True, limit=10_000)
    assert [e.update_id for e in rest][:3] == [1, 2, 3] and len(rest) == 2105


async def test_a_burst_of_concurrent_writes_waits_for_connections(rstore: RedisStore) -> None:
    import asyncio

    # The worker does not await completions one by one: hundreds may be in flight at once,
    # more than the pool has connections. They queue for one instead of failing.
    await rstore.add_batch(BOT, [msg(i) for i in range(1, 401)], ME, 60)
    await asyncio.gather(*(rstore.complete(BOT, i, ME) for i in range(1, 401)),
                         *(rstore.record_send(BOT, i, 1, "sendMessage", {"i": i})
                           for i in range(1, 401)))
    assert (await rstore.counts(BOT))["done"] == 400
    assert await rstore.sends_for(BOT, 400) == {1: {"i": 400}}


async def test_malformed_ids_go_below_zero_and_cannot_be_retried(rstore: RedisStore) -> None:
    await rstore.add_batch(BOT, [{"update_id": "x"}, "garbage", {"update_id": 5}], ME, 60)  # type: ignore[list-item]
    dead = await rstore.dead_letters(BOT)
    assert [d.update_id for d in dead] == [-2, -1, 5]
    assert dead[0].update == {"value": "'garbage'"} and dead[1].update == {"update_id": "x"}
    assert dead[2].error == "malformed: update 5 carries no payload"
    with pytest.raises(StoreError, match="drop it with `antiloop dead-letters drop -1`"):
        await rstore.retry_dead(BOT, -1)
    assert await rstore.drop_dead(BOT, -1)
    assert [d.update_id for d in await rstore.dead_letters(BOT, limit=1)] == [-2]


async def test_reset_is_this_bot_only_and_keeps_the_lock(
        rstore: RedisStore, url: str, redis_url: str, prefix: str) -> None:
    lock = RedisLock(url, Identity("a", 1, "h"), BOT, lease_s=5)
    assert lock.try_acquire()
    await rstore.add_batch(BOT, [msg(1), "bad"], ME, 60)  # type: ignore[list-item]
    await rstore.add_batch(BOT + 1, [msg(1)], ME, 60)
    await rstore.record_send(BOT, 1, 1, "sendMessage", True)
    await rstore.hit_window(BOT, "k", 5)
    assert await rstore.bot_ids() == [BOT, BOT + 1]
    await rstore.reset(BOT)
    assert await rstore.bot_ids() == [BOT + 1]
    assert await rstore.counts(BOT) == {"pending": 0, "in_flight": 0, "done": 0, "dead": 0}
    assert await rstore.sends_for(BOT, 1) == {}
    left = {k.split(":", 2)[2] for k in keys_of(redis_url, prefix)
            if k.startswith(f"{prefix}:{{{BOT}}}:")}
    assert left == {"fence", "lock"}, "the fencing counter must survive a reset"
    assert (await rstore.counts(BOT + 1))["in_flight"] == 1
    lock.release()


async def test_purge_drops_old_windows(rstore: RedisStore, clock: FakeClock) -> None:
    assert not await rstore.hit_window(BOT, "k", 10_000)
    clock.advance(3601)
    assert not await rstore.hit_window(BOT, "fresh", 10_000)
    await rstore.purge(BOT, clock() - 50, limit=100)
    assert not await rstore.hit_window(BOT, "k", 10_000), "an old window was not purged"
    assert await rstore.hit_window(BOT, "fresh", 10_000)


# -- errors and URLs ---------------------------------------------------------------------------------


async def test_open_fails_clearly_without_redis_and_never_shows_the_password() -> None:
    store = RedisStore("redis://:s3cretpw@127.0.0.1:1/0")
    with pytest.raises(StoreError) as info:
        await store.open()
    text = str(info.value)
    assert "redis://127.0.0.1:1/0" in text and "start Redis" in text
    assert "s3cretpw" not in text and "s3cretpw" not in store.url and "s3cretpw" not in repr(store)
    with pytest.raises(StoreError, match="not open"):
        await store.counts(BOT)


def test_a_lock_without_redis_says_where_and_what_to_do() -> None:
    lock = RedisLock("redis://:s3cretpw@127.0.0.1:1/0", Identity(), BOT, lease_s=1)
    with pytest.raises(LockError) as info:
        lock.try_acquire()
    assert "redis://127.0.0.1:1/0" in str(info.value) and "s3cretpw" not in str(info.value)
    assert "s3cretpw" not in lock.url


async def test_a_wrong_password_is_named_as_such(redis_url: str) -> None:
    # A user that does not exist: Redis answers WRONGPASS, with or without requirepass.
    store = RedisStore(redis_url.replace("redis://", "redis://antiloop-nobody:n0pe@"))
    with pytest.raises(StoreError, match="refused the credentials") as info:
        await store.open()
    assert "n0pe" not in str(info.value)


def test_urls_and_options(redis_url: str) -> None:
    parsed = parse_redis_url("rediss://user:pw@example.org:6380/3?prefix=bots&lease=2.5")
    assert parsed.display == "rediss://example.org:6380/3"
    assert (parsed.prefix, parsed.lease_s) == ("bots", 2.5)
    assert "prefix" not in parsed.client_url and "pw@" in parsed.client_url
    assert parse_redis_url("redis://h").display == "redis://h:6379/0"
    for bad, why in [("redis://h/0?colour=red", "unknown option 'colour'"),
                     ("redis://h/x", "database is a number"),
                     ("redis://h/0?prefix=a{b}", "hash tag"),
                     ("redis://h/0?lease=0", "lease in seconds"),
                     ("redis://h:99999/0", "not valid")]:
        with pytest.raises(ConfigError, match=why):
            parse_redis_url(bad)
    store = open_store(f"{redis_url}?prefix=p1")
    assert isinstance(store, RedisStore) and store.prefix == "p1"
    lock = open_lock(f"{redis_url}?prefix=p1&lease=3", Identity(), BOT)
    assert isinstance(lock, RedisLock)
    assert (lock.prefix, lock.lease_s, lock.key) == ("p1", 3.0, "p1:{42}:lock")
    assert lock.url.endswith("?prefix=p1&lease=3")
