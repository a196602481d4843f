"""Flood control: 429 with retry_after, per chat, per group, global; off switch."""

from __future__ import annotations

import pytest

from antiloop.testing import Emulator, ManualClock, RateLimits
from antiloop.testing.client import RawBotClient

USER = 5001


@pytest.mark.antiloop_emulator(clock=ManualClock())
async def test_per_chat_limit_answers_429_with_retry_after(
    emulator: Emulator, bot: RawBotClient
) -> None:
    clock = emulator.clock
    assert isinstance(clock, ManualClock)
    await emulator.send(bot.bot_id, USER, "spam me")
    burst = RateLimits().per_chat_burst
    for i in range(burst):
        await bot.ok("sendMessage", chat_id=USER, text=f"m{i}")
    status, body = await bot.call("sendMessage", chat_id=USER, text="one too many")
    assert status == 429
    retry_after = body["parameters"]["retry_after"]
    assert isinstance(retry_after, int) and retry_after >= 1
    assert body == {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after}",
        "parameters": {"retry_after": retry_after},
    }
    # not limited: reading methods
    for _ in range(50):
        await bot.ok("getUpdates")
        await bot.ok("getMe")
    clock.advance(retry_after)
    await bot.ok("sendMessage", chat_id=USER, text="after waiting")
    stats = emulator.stats()
    assert stats["rate_limited_429"] == 1
    assert stats["messages_sent"] == burst + 1


@pytest.mark.antiloop_emulator(clock=ManualClock())
async def test_edits_are_limited_too(emulator: Emulator, bot: RawBotClient) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    mid = (await bot.ok("sendMessage", chat_id=USER, text="v0"))["message_id"]
    codes = []
    for i in range(1, 6):
        status, _ = await bot.call("editMessageText", chat_id=USER, message_id=mid, text=f"v{i}")
        codes.append(status)
    assert 429 in codes


@pytest.mark.antiloop_emulator(
    clock=ManualClock(),
    rate_limits=RateLimits(per_chat_per_second=100, per_chat_burst=100, per_group_per_minute=20),
)
async def test_per_group_limit_is_20_a_minute(emulator: Emulator, bot: RawBotClient) -> None:
    clock = emulator.clock
    assert isinstance(clock, ManualClock)
    group = -4242
    await emulator.send(bot.bot_id, USER, "hi all", chat_id=group)
    for i in range(20):
        await bot.ok("sendMessage", chat_id=group, text=f"m{i}")
    status, body = await bot.call("sendMessage", chat_id=group, text="21st")
    assert status == 429 and body["parameters"]["retry_after"] == 3  # one message per 3 s
    clock.advance(3)
    await bot.ok("sendMessage", chat_id=group, text="21st")


@pytest.mark.antiloop_emulator(
    clock=ManualClock(),
    rate_limits=RateLimits(per_chat_burst=5, global_per_second=30),
)
async def test_global_limit_is_30_a_second(emulator: Emulator, bot: RawBotClient) -> None:
    users = list(range(7001, 7011))
    for user in users:
        await emulator.send(bot.bot_id, user, "hi")
    sent = 0
    statuses = []
    for user in users:
        for _ in range(4):
            status, _ = await bot.call("sendMessage", chat_id=user, text="x")
            statuses.append(status)
            sent += status == 200
    assert sent == 30
    assert statuses.count(429) == 10


@pytest.mark.antiloop_emulator(rate_limits=False)
async def test_rate_limits_can_be_switched_off(emulator: Emulator, bot: RawBotClient) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    for i in range(60):
        await bot.ok("sendMessage", chat_id=USER, text=f"m{i}")
    assert emulator.stats()["rate_limited_429"] == 0
