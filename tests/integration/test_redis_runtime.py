"""`antiloop run` on the Redis store and lease lock, with real processes and a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antiloop.testing import Emulator
from tests.integration.harness import Fleet

BOT = 777003


@pytest.fixture
async def tg() -> AsyncIterator[Emulator]:
    async with Emulator(rate_limits=False) as emu:
        yield emu


async def test_redis_fleet_one_poller_takeover_after_sigkill_nothing_lost(
        tmp_path: Path, tg: Emulator, redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    f = Fleet(tmp_path, tg.base_url, Emulator.token_for(BOT), "echo")
    f.store = f"{redis_url}?prefix={prefix}"
    f.lock = f"{redis_url}?prefix={prefix}&lease=1.5"
    f.start(3)
    users = list(range(1, 9))
    try:
        holder: list[int] = []

        def holder_known() -> bool:
            st = f.status()
            if st["lock"]["held"] and st["lock"]["holder"]:
                holder[:] = [int(st["lock"]["holder"]["pid"])]
                return True
            return False

        await f.wait(holder_known, what="a Redis lock holder")
        first = holder[0]
        sent = 0
        for i in range(12):
            for u in users:
                await tg.send(BOT, u, f"redis {i}-{u}")
                sent += 1
            if i == 5:
                await f.wait(lambda: len(f.done_counts()) >= 30, what="30 handled")
                f.kill(first)
            await asyncio.sleep(0.02)
        await f.wait(lambda: len(f.done_counts()) == sent, timeout=60, what="all handled")
        replies: Counter[str] = Counter()
        for u in users:
            replies.update(m["text"] for m in tg.messages(u, bot_id=BOT) if m["from_bot"])
        assert len(replies) == sent and set(replies.values()) == {1}, "lost or duplicated"
        st = f.status()
        assert st["lock"]["held"] and int(st["lock"]["holder"]["pid"]) != first
        assert st["inbox"]["done"] == sent
        assert tg.stats(BOT)["getupdates_pollers_max"] == 1
    finally:
        f.stop_all()
        from redis.client import Redis

        client = Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
