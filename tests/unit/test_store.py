"""The Store contract, on both backends (a real SQLite file and memory)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from antiloop._util import Identity
from antiloop.errors import StoreError
from antiloop.store import SQLiteStore, Store
from tests.conftest import FakeClock

BOT = 42
ME = Identity("me", 1, "h")
OTHER = Identity("other", 2, "h")


def msg(uid: int, chat: int = 7, text: str = "hi") -> dict:
    return {"update_id": uid, "message": {"message_id": uid, "date": 0, "text": text,
                                          "chat": {"id": chat, "type": "private"},
                                          "from": {"id": chat, "is_bot": False, "first_name": "u"}}}


async def test_add_batch_dedupes_by_key_and_counts_redeliveries(store: Store) -> None:
    new = await store.add_batch(BOT, [msg(1), msg(2)], ME, 60)
    assert [e.update_id for e in new] == [1, 2]
    assert all(e.state == "claimed" and e.attempts == 1 for e in new)
    again = await store.add_batch(BOT, [msg(2), msg(3)], ME, 60)
    assert [e.update_id for e in again] == [3]
    assert (await store.suppressed(BOT)) == {"redelivered": 1}
    assert (await store.counts(BOT))["in_flight"] == 3
    # another bot's update 1 is a different key
    assert [e.update_id for e in await store.add_batch(BOT + 1, [msg(1)], ME, 60)] == [1]


async def test_malformed_updates_become_dead_letters_not_crashes(store: Store) -> None:
    new = await store.add_batch(BOT, [{"update_id": "x"}, "garbage", {"update_id": 5}, msg(6)], ME, 60)  # type: ignore[list-item]
    assert [e.update_id for e in new] == [6]
    dead = await store.dead_letters(BOT)
    assert len(dead) == 3
    assert all(d.error.startswith("malformed") for d in dead)
    assert (await store.suppressed(BOT))["malformed"] == 3


async def test_complete_and_done_updates_are_never_handed_out_again(store: Store) -> None:
    await store.add_batch(BOT, [msg(1), msg(2)], ME, 60)
    await store.complete(BOT, 1, ME)
    assert (await store.counts(BOT)) == {"pending": 0, "in_flight": 1, "done": 1, "dead": 0}
    got = await store.recover(BOT, OTHER, 60, take_all=True, limit=100)
    assert [e.update_id for e in got] == [2]
    assert got[0].attempts == 2
    assert got[0].update["message"]["text"] == "hi"
    assert await store.add_batch(BOT, [msg(1)], ME, 60) == []


async def test_recover_respects_leases_unless_holder_is_gone(store: Store, clock: FakeClock) -> None:
    await store.add_batch(BOT, [msg(1)], OTHER, 60)
    await store.add_batch(BOT, [msg(2)], None, 60)
    got = await store.recover(BOT, ME, 60, take_all=False, limit=100)
    assert [e.update_id for e in got] == [2]  # 1 is under OTHER's lease
    clock.advance(61)
    got = await store.recover(BOT, ME, 60, take_all=False, limit=100)
    assert [e.update_id for e in got] == [1]
    await store.add_batch(BOT, [msg(3)], OTHER, 60)
    got = await store.recover(BOT, ME, 60, take_all=True, limit=100)
    assert [e.update_id for e in got] == [1, 2, 3]


async def test_fail_counts_attempts_then_dead_letter_retry_and_drop(store: Store) -> None:
    await store.add_batch(BOT, [msg(1), msg(2)], ME, 60)
    assert await store.fail(BOT, 1, "ValueError: boom", dead=False, owner=ME) == 2
    assert await store.fail(BOT, 1, "ValueError: boom", dead=True, owner=ME) == 2
    dead = await store.dead_letters(BOT)
    assert [(d.update_id, d.error) for d in dead] == [(1, "ValueError: boom")]
    assert dead[0].update is not None and dead[0].update["update_id"] == 1
    assert (await store.counts(BOT))["dead"] == 1
    assert await store.add_batch(BOT, [msg(1)], ME, 60) == []  # a redelivery does not revive it
    assert await store.retry_dead(BOT, 1)
    assert (await store.counts(BOT))["dead"] == 0
    got = await store.recover(BOT, ME, 60, take_all=False, limit=10)
    assert [e.update_id for e in got] == [1] and got[0].attempts == 1
    await store.fail(BOT, 2, "x", dead=True, owner=ME)
    assert await store.drop_dead(BOT, 2)
    assert not await store.drop_dead(BOT, 2)
    assert not await store.retry_dead(BOT, 99)


async def test_release_makes_entries_runnable_for_the_next_holder(store: Store) -> None:
    await store.add_batch(BOT, [msg(1), msg(2)], ME, 60)
    await store.release(BOT, [1, 2])
    assert (await store.counts(BOT))["pending"] == 2
    got = await store.recover(BOT, OTHER, 60, take_all=False, limit=10)
    assert [e.update_id for e in got] == [1, 2]
    assert [e.attempts for e in got] == [1, 1], "a graceful release must not burn an attempt"


async def test_release_with_owner_gives_back_only_its_own_claims(store: Store) -> None:
    await store.add_batch(BOT, [msg(1)], ME, 60)
    await store.add_batch(BOT, [msg(2)], OTHER, 60)
    await store.release(BOT, [1, 2], owner=ME)
    assert (await store.counts(BOT)) == {"pending": 1, "in_flight": 1, "done": 0, "dead": 0}


async def test_send_ledger(store: Store) -> None:
    assert await store.sends_for(BOT, 1) == {}
    await store.record_send(BOT, 1, 1, "sendMessage", {"message_id": 10})
    await store.record_send(BOT, 1, 2, "answerCallbackQuery", True)
    assert await store.sends_for(BOT, 1) == {1: {"message_id": 10}, 2: True}
    assert await store.sends_for(BOT, 2) == {}


async def test_hit_window_is_a_fixed_window_from_the_last_accepted_hit(store: Store, clock: FakeClock) -> None:
    assert not await store.hit_window(BOT, "k", 1.0)
    clock.advance(0.5)
    assert await store.hit_window(BOT, "k", 1.0)
    assert not await store.hit_window(BOT, "other", 1.0)
    assert not await store.hit_window(BOT + 1, "k", 1.0)
    clock.advance(0.6)
    assert not await store.hit_window(BOT, "k", 1.0)  # 1.1 s after the accepted one
    assert await store.hit_window(BOT, "k", 1.0)


async def test_purge_is_bounded_and_keeps_recent_and_unfinished(store: Store, clock: FakeClock) -> None:
    await store.add_batch(BOT, [msg(i) for i in range(1, 11)], ME, 60)
    for i in range(1, 9):
        await store.complete(BOT, i, ME)
    clock.advance(100)
    await store.add_batch(BOT, [msg(11)], ME, 60)
    await store.complete(BOT, 11, ME)
    assert await store.purge(BOT, clock() - 50, limit=5) == 5
    assert await store.purge(BOT, clock() - 50, limit=5) == 3
    assert await store.purge(BOT, clock() - 50, limit=5) == 0
    assert await store.counts(BOT) == {"pending": 0, "in_flight": 2, "done": 1, "dead": 0}


async def test_counters_and_reset(store: Store) -> None:
    await store.count_suppressed(BOT, "debounced")
    await store.count_suppressed(BOT, "debounced", 2)
    assert await store.suppressed(BOT) == {"debounced": 3}
    await store.add_batch(BOT, [msg(1)], ME, 60)
    assert await store.bot_ids() == [BOT]
    await store.reset(BOT)
    assert await store.suppressed(BOT) == {}
    assert await store.counts(BOT) == {"pending": 0, "in_flight": 0, "done": 0, "dead": 0}


# -- SQLite-specific: a real file ---------------------------------------------------------------


async def test_sqlite_survives_reopen_and_is_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bot.db"
    s = SQLiteStore(url)
    await s.open()
    await s.add_batch(BOT, [msg(1), msg(2)], ME, 60)
    await s.complete(BOT, 1, ME)
    await s.close()
    assert stat.S_IMODE(os.stat(tmp_path / "bot.db").st_mode) == 0o600
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    s2 = SQLiteStore(url)
    await s2.open()
    try:
        assert await s2.counts(BOT) == {"pending": 0, "in_flight": 1, "done": 1, "dead": 0}
        assert await s2.add_batch(BOT, [msg(1), msg(2)], ME, 60) == []
    finally:
        await s2.close()


async def test_sqlite_concurrent_writes_are_group_committed(tmp_path: Path) -> None:
    import asyncio

    s = SQLiteStore(f"sqlite:///{tmp_path}/bot.db")
    await s.open()
    try:
        await s.add_batch(BOT, [msg(i) for i in range(1, 201)], ME, 60)
        await asyncio.gather(*(s.complete(BOT, i, ME) for i in range(1, 201)),
                             *(s.record_send(BOT, i, 1, "sendMessage", {"i": i}) for i in range(1, 201)))
        assert (await s.counts(BOT))["done"] == 200
        assert await s.sends_for(BOT, 200) == {1: {"i": 200}}
    finally:
        await s.close()


async def test_sqlite_corrupt_file_gives_an_error_naming_file_and_fix(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    db.write_bytes(b"this is not a database, just some bytes" * 100)
    s = SQLiteStore(f"sqlite:///{db}")
    with pytest.raises(StoreError) as info:
        await s.open()
    text = str(info.value)
    assert str(db) in text and "corrupt" in text and "mv " in text


async def test_sqlite_missing_directory_and_foreign_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await SQLiteStore(f"sqlite:///{tmp_path}/nope/bot.db").open()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(StoreError, match="not antiloop's"):
        await SQLiteStore(f"sqlite:///{other}").open()


async def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    s = SQLiteStore(f"sqlite:///{tmp_path}/bot.db")
    await s.open()
    await s.close()
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer antiloop"):
        await SQLiteStore(f"sqlite:///{tmp_path}/bot.db").open()


def test_store_urls() -> None:
    from antiloop.errors import ConfigError
    from antiloop.store import MemoryStore, open_store
    from antiloop.store.sqlite import path_from_url

    assert path_from_url("sqlite:///bot_status.db") == Path("bot_status.db")
    assert path_from_url("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert isinstance(open_store("memory://"), MemoryStore)
    with pytest.raises(ConfigError, match="unknown store URL"):
        open_store("postgres://x")


async def test_exclusive_windows_are_local_and_carried_to_the_next_holder(
        tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path}/bot.db"
    a = SQLiteStore(url, clock=clock)
    await a.open()
    await a.become_exclusive(BOT)
    assert not await a.hit_window(BOT, "press:1", 10)
    assert await a.hit_window(BOT, "press:1", 10)
    await a.close()  # what was persisted behind is committed by now
    b = SQLiteStore(url, clock=clock)
    await b.open()
    try:
        await b.become_exclusive(BOT)
        clock.advance(5)
        assert await b.hit_window(BOT, "press:1", 10), "the new holder forgot the window"
        clock.advance(6)
        assert not await b.hit_window(BOT, "press:1", 10)
    finally:
        await b.close()


async def test_sqlite_immutable_file_says_read_only_not_disk_full(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    s = SQLiteStore(f"sqlite:///{tmp_path}/bot.db")
    await s.open()
    await s.add_batch(BOT, [msg(1)], ME, 60)
    files = [p for p in (tmp_path / "bot.db", tmp_path / "bot.db-wal") if p.exists()]
    res = subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True, text=True)
    if res.returncode != 0:
        await s.close()
        pytest.skip(f"chattr +i is not supported here: {res.stderr.strip()}")
    try:
        with pytest.raises(StoreError) as info:
            for i in range(2, 2000):  # the WAL refuses the write at once or at a checkpoint
                await s.add_batch(BOT, [msg(i)], ME, 60)
        text = str(info.value)
        assert "read-only or immutable" in text and str(tmp_path / "bot.db") in text
        assert "Free disk space" not in text
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], check=True)
        await s.close()
