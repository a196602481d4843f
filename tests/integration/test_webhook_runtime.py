"""The webhook source with real processes: stored before 200, handled once, takeover."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antiloop.testing import Emulator
from tests.integration.harness import Fleet, wait_until

BOT = 777002


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def tg() -> AsyncIterator[Emulator]:
    # Telegram's retry schedule (0, 2, 4, 8 s ...) at a hundredth of the time.
    async with Emulator(rate_limits=False, time_scale=0.01, webhook_timeout=500) as emu:
        yield emu


def webhook_fleet(tmp_path: Path, tg: Emulator) -> Fleet:
    port = free_port()
    return Fleet(tmp_path, tg.base_url, Emulator.token_for(BOT), "echo",
                 "--webhook-url", f"http://127.0.0.1:{port}/tg/hook",
                 "--listen", f"127.0.0.1:{port}")


def replies(tg: Emulator, chats: list[int]) -> Counter[str]:
    out: Counter[str] = Counter()
    for chat in chats:
        out.update(m["text"] for m in tg.messages(chat, bot_id=BOT) if m["from_bot"])
    return out


async def test_webhook_updates_handled_once_despite_redelivery(tmp_path: Path, tg: Emulator) -> None:
    tg.set_faults(redeliver=0.3, seed=3)
    f = webhook_fleet(tmp_path, tg)
    f.start(1)
    try:
        await wait_until(lambda: tg.stats(BOT)["calls"].get("setWebhook", 0) >= 1,
                         what="setWebhook")
        info = tg.stats(BOT)
        assert info["calls"].get("getUpdates", 0) == 0, "a webhook bot must not poll"
        for i in range(40):
            await tg.send(BOT, 1 + i % 4, f"w{i}")
        await wait_until(lambda: len(f.done_counts()) == 40, what="40 webhook updates")
        await asyncio.sleep(0.5)
        assert set(f.done_counts().values()) == {1}
        r = replies(tg, [1, 2, 3, 4])
        assert len(r) == 40 and set(r.values()) == {1}
        assert f.status()["suppressed"].get("redelivered", 0) > 0, "the fault did not fire"
    finally:
        f.stop_all()


async def test_webhook_holder_sigkilled_standby_takes_over_nothing_lost(
        tmp_path: Path, tg: Emulator) -> None:
    f = webhook_fleet(tmp_path, tg)
    f.start(2)
    users = [1, 2, 3, 4, 5]
    try:
        await wait_until(lambda: f.holder_pid() is not None, what="a holder")
        first = f.holder_pid()
        assert first is not None
        await wait_until(lambda: tg.stats(BOT)["calls"].get("setWebhook", 0) >= 1,
                         what="setWebhook")
        sent = 0
        for i in range(20):
            for u in users:
                await tg.send(BOT, u, f"k{i}-{u}")
                sent += 1
            if i == 8:
                f.kill(first)
            await asyncio.sleep(0.02)
        await wait_until(lambda: len(f.done_counts()) == sent, timeout=60, what="all updates")
        r = replies(tg, users)
        assert len(r) == sent and set(r.values()) == {1}, "lost or duplicated"
        assert tg.stats(BOT)["webhook_failures"] > 0, "no delivery hit the dead holder"
    finally:
        f.stop_all()


async def test_webhook_refuses_a_post_without_the_secret(tmp_path: Path, tg: Emulator) -> None:
    import aiohttp

    f = webhook_fleet(tmp_path, tg)
    f.start(1)
    url = f.extra[1]
    try:
        await wait_until(lambda: tg.stats(BOT)["calls"].get("setWebhook", 0) >= 1,
                         what="setWebhook")
        async with aiohttp.ClientSession() as s:
            r = await s.post(url, json={"update_id": 1, "message": {"text": "forged"}})
            assert r.status == 403
        await asyncio.sleep(0.3)
        assert f.done_counts() == Counter()
    finally:
        f.stop_all()
