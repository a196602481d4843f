"""getUpdates: offset, negative offset, limit, long poll, 409s, allowed_updates, retention."""

from __future__ import annotations

import asyncio

import pytest

from antiloop.testing import Emulator, ManualClock
from antiloop.testing.client import RawBotClient

USER = 5001
CONFLICT_POLL = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)


def ids(updates: list[dict[str, object]]) -> list[object]:
    return [u["update_id"] for u in updates]


async def send_n(emulator: Emulator, bot: RawBotClient, n: int) -> list[int]:
    return [(await emulator.send(bot.bot_id, USER, f"m{i}"))["update_id"] for i in range(n)]


async def test_offset_confirms_everything_below_it(emulator: Emulator, bot: RawBotClient) -> None:
    sent = await send_n(emulator, bot, 5)
    assert ids(await bot.ok("getUpdates")) == sent
    assert ids(await bot.ok("getUpdates")) == sent  # nothing confirmed yet
    assert ids(await bot.ok("getUpdates", offset=sent[2])) == sent[2:]
    assert ids(await bot.ok("getUpdates", offset=sent[-1] + 1)) == []
    assert emulator.stats()["updates_pending"] == 0


async def test_negative_offset_keeps_only_the_last_n(emulator: Emulator, bot: RawBotClient) -> None:
    sent = await send_n(emulator, bot, 5)
    assert ids(await bot.ok("getUpdates", offset=-2)) == sent[-2:]
    assert ids(await bot.ok("getUpdates")) == sent[-2:]  # the earlier ones are forgotten


async def test_limit_is_clamped_to_1_100(emulator: Emulator, bot: RawBotClient) -> None:
    sent = await send_n(emulator, bot, 3)
    assert ids(await bot.ok("getUpdates", limit=2)) == sent[:2]
    assert ids(await bot.ok("getUpdates", limit=0)) == sent[:1]
    assert ids(await bot.ok("getUpdates", limit=1000)) == sent


async def test_limit_defaults_to_100(emulator: Emulator, bot: RawBotClient) -> None:
    await send_n(emulator, bot, 105)
    assert len(await bot.ok("getUpdates")) == 100


async def test_long_poll_is_woken_by_an_update(emulator: Emulator, bot: RawBotClient) -> None:
    poll = asyncio.create_task(bot.ok("getUpdates", timeout=30))
    await emulator.wait_for(lambda: emulator.stats()["getupdates_in_flight"] == 1)
    assert not poll.done()
    sent = await emulator.send(bot.bot_id, USER, "wake up")
    updates = await asyncio.wait_for(poll, 5)
    assert ids(updates) == [sent["update_id"]]


async def test_long_poll_returns_empty_after_its_timeout(bot: RawBotClient) -> None:
    assert await bot.ok("getUpdates", timeout=0.05) == []


async def test_second_poller_terminates_the_parked_one_with_409(
    emulator: Emulator, bot: RawBotClient
) -> None:
    first = asyncio.create_task(bot.call("getUpdates", timeout=30))
    await emulator.wait_for(lambda: emulator.stats()["getupdates_in_flight"] == 1)
    second = asyncio.create_task(bot.ok("getUpdates", timeout=30))
    status, body = await asyncio.wait_for(first, 5)
    assert status == 409
    assert body == {"ok": False, "error_code": 409, "description": CONFLICT_POLL}
    sent = await emulator.send(bot.bot_id, USER, "for the newer poller")
    assert ids(await asyncio.wait_for(second, 5)) == [sent["update_id"]]
    stats = emulator.stats()
    assert stats["conflicts_409"] == 1
    assert stats["getupdates_pollers_max"] == 2


@pytest.mark.antiloop_emulator(time_scale=0.01)
async def test_conflicts_are_at_most_one_per_interval(
    emulator: Emulator, bot: RawBotClient
) -> None:
    first = asyncio.create_task(bot.call("getUpdates", timeout=30))
    await emulator.wait_for(lambda: emulator.stats()["getupdates_in_flight"] == 1)
    second = asyncio.create_task(bot.call("getUpdates", timeout=30))
    assert (await asyncio.wait_for(first, 5))[0] == 409
    await emulator.wait_for(lambda: emulator.stats()["getupdates_in_flight"] == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    third = asyncio.create_task(bot.call("getUpdates", timeout=30))
    assert (await asyncio.wait_for(second, 5))[0] == 409
    # the second 409 waited for the 3 s interval (scaled by 0.01): a lower bound only
    assert loop.time() - started >= 0.03 * 0.9
    await emulator.send(bot.bot_id, USER, "x")
    status, _ = await asyncio.wait_for(third, 5)
    assert status == 200


async def test_two_pollers_with_the_same_offset_get_the_same_batch(
    emulator: Emulator, bot: RawBotClient
) -> None:
    sent = await send_n(emulator, bot, 2)
    a, b = await asyncio.gather(bot.ok("getUpdates"), bot.ok("getUpdates"))
    assert ids(a) == ids(b) == sent


async def test_get_updates_while_webhook_is_set_is_409(
    emulator: Emulator, bot: RawBotClient
) -> None:
    await bot.ok("setWebhook", url="http://127.0.0.1:9/hook")
    status, body = await bot.call("getUpdates")
    assert status == 409
    assert body == {"ok": False, "error_code": 409, "description": CONFLICT_WEBHOOK}
    await bot.ok("deleteWebhook")
    assert await bot.ok("getUpdates") == []


async def test_set_webhook_terminates_a_parked_poll(emulator: Emulator, bot: RawBotClient) -> None:
    poll = asyncio.create_task(bot.call("getUpdates", timeout=30))
    await emulator.wait_for(lambda: emulator.stats()["getupdates_in_flight"] == 1)
    await bot.ok("setWebhook", url="http://127.0.0.1:9/hook")
    status, body = await asyncio.wait_for(poll, 5)
    assert (status, body["description"]) == (409, "Conflict: terminated by setWebhook request")


async def test_allowed_updates_is_remembered_between_calls(
    emulator: Emulator, bot: RawBotClient
) -> None:
    await emulator.send(bot.bot_id, USER, "before the filter")
    first = await bot.ok("getUpdates", allowed_updates=["callback_query"])
    assert len(first) == 1  # updates made before the call are still delivered
    offset = first[0]["update_id"] + 1
    keyboard = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    mid = (await bot.ok("sendMessage", chat_id=USER, text="q", reply_markup=keyboard))["message_id"]
    dropped = await emulator.send(bot.bot_id, USER, "filtered out")
    assert dropped["update_id"] is None
    click = await emulator.click(bot.bot_id, USER, mid, "go")
    updates = await bot.ok("getUpdates", offset=offset)  # no allowed_updates: kept
    assert ids(updates) == [click["update_id"]]
    assert "callback_query" in updates[0]
    # a JSON string, any case, unknown names skipped; [] means the default again
    await bot.ok(
        "getUpdates", encoding="form", offset=offset + 1, allowed_updates='["MESSAGE", "nope"]'
    )
    assert (await emulator.send(bot.bot_id, USER, "m"))["update_id"] is not None
    assert (await emulator.click(bot.bot_id, USER, mid, "go"))["update_id"] is None
    await bot.ok("getUpdates", allowed_updates=[])
    assert (await emulator.click(bot.bot_id, USER, mid, "go"))["update_id"] is not None
    assert emulator.stats()["updates_filtered"] == 2


@pytest.mark.antiloop_emulator(clock=ManualClock(1_700_000_000))
async def test_retention_by_update_type(emulator: Emulator, bot: RawBotClient) -> None:
    clock = emulator.clock
    assert isinstance(clock, ManualClock)
    await emulator.send(bot.bot_id, USER, "hi")
    keyboard = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    mid = (await bot.ok("sendMessage", chat_id=USER, text="q", reply_markup=keyboard))["message_id"]
    message = await emulator.send(bot.bot_id, USER, "kept a day")
    callback = await emulator.click(bot.bot_id, USER, mid, "go")
    inline = await emulator.inline_query(bot.bot_id, USER, "cats")
    clock.advance(31)
    assert emulator.stats()["updates_pending"] == 4
    assert inline["update_id"] not in ids(await bot.ok("getUpdates"))
    clock.advance(120)  # 151 s after the click
    remaining = ids(await bot.ok("getUpdates"))
    assert callback["update_id"] not in remaining and message["update_id"] in remaining
    clock.advance(24 * 3600)
    assert await bot.ok("getUpdates") == []
    assert emulator.stats()["updates_expired"] == 4


async def test_next_update_id_can_jump(emulator: Emulator, bot: RawBotClient) -> None:
    emulator.set_next_update_id(bot.bot_id, 987_654_321)
    sent = await emulator.send(bot.bot_id, USER, "after a quiet week")
    assert sent["update_id"] == 987_654_321
    assert ids(await bot.ok("getUpdates")) == [987_654_321]


async def test_a_poller_that_hung_up_is_not_a_conflict(emulator: Emulator, bot: RawBotClient) -> None:
    """A killed process's parked getUpdates is dropped, not answered 409 or counted as live."""
    import aiohttp

    url = f"{emulator.base_url}/bot{bot.token}/getUpdates"
    async with aiohttp.ClientSession() as session:
        async def park() -> None:
            async with session.post(url, json={"timeout": 30}) as r:
                await r.read()

        dead = asyncio.create_task(park())
        await emulator.wait_for(lambda: emulator.stats(bot.bot_id)["getupdates_in_flight"] == 1)
        dead.cancel()  # the client hangs up, as a SIGKILLed process's socket does
        await asyncio.gather(dead, return_exceptions=True)
    await asyncio.sleep(0.05)  # the server notices the closed connection
    sent = await send_n(emulator, bot, 1)
    assert ids(await bot.ok("getUpdates", timeout=1)) == sent
    stats = emulator.stats(bot.bot_id)
    assert stats["conflicts_409"] == 0
    assert stats["getupdates_pollers_max"] == 1
