"""The control routes over HTTP, the Python API behind them, and faults."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from antiloop.testing import Emulator, EmulatorError
from antiloop.testing.client import RawBotClient

USER = 5001


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_http_send_click_transcript_stats(
    emulator: Emulator, bot: RawBotClient, http: aiohttp.ClientSession
) -> None:
    base = f"{emulator.base_url}/_emulator"
    status, sent = await post(
        http, f"{base}/send", {"bot_id": bot.bot_id, "user_id": USER, "text": "/start"}
    )
    assert status == 200 and set(sent) >= {"update_id", "message_id"}
    keyboard = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    reply = await bot.ok(
        "sendMessage",
        chat_id=USER,
        text="menu",
        reply_markup=keyboard,
        reply_to_message_id=sent["message_id"],
    )
    # bot_id may be omitted: only one bot has been seen
    status, click = await post(
        http, f"{base}/click", {"user_id": USER, "message_id": reply["message_id"], "data": "go"}
    )
    assert status == 200 and set(click) >= {"update_id", "callback_query_id"}
    status, body = await post(
        http, f"{base}/click", {"user_id": USER, "message_id": reply["message_id"], "data": "nope"}
    )
    assert status == 400 and "no inline button" in body["description"]

    status, transcript = await get(http, f"{base}/chats/{USER}/messages?bot_id={bot.bot_id}")
    assert status == 200
    first, second = transcript["messages"]
    assert first["from_bot"] is False and first["text"] == "/start"
    assert second == {
        **second,
        "message_id": reply["message_id"],
        "from_bot": True,
        "text": "menu",
        "reply_markup": keyboard,
        "reply_to_message_id": sent["message_id"],
        "edits": 0,
        "deleted": False,
    }
    status, stats = await get(http, f"{base}/stats")
    assert status == 200
    for key in (
        "updates_created",
        "updates_delivered",
        "conflicts_409",
        "rate_limited_429",
        "webhook_attempts",
        "webhook_failures",
        "messages_sent",
        "sends_dropped",
        "getupdates_pollers_max",
    ):
        assert isinstance(stats[key], int), key
    assert stats["updates_created"] == 2
    assert stats["callbacks"] == {
        "created": 1,
        "answered": 0,
        "unanswered": 1,
        "answered_twice": 0,
        "answered_late": 0,
    }
    assert stats["calls"] == {"sendMessage": 1}


async def test_http_send_from_another_bot_into_a_group(
    emulator: Emulator, bot: RawBotClient, http: aiohttp.ClientSession
) -> None:
    status, _ = await post(
        http,
        f"{emulator.base_url}/_emulator/send",
        {
            "bot_id": bot.bot_id,
            "user_id": 999,
            "chat_id": -55,
            "text": "beep",
            "is_bot": True,
            "first_name": "Other",
            "username": "other_bot",
        },
    )
    assert status == 200
    (update,) = await bot.ok("getUpdates")
    sender = update["message"]["from"]
    assert sender == {"id": 999, "is_bot": True, "first_name": "Other", "username": "other_bot"}
    assert update["message"]["chat"]["id"] == -55
    assert emulator.messages(-55)[0]["is_bot"] is True


async def test_bot_id_is_required_when_several_bots_were_seen(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    base = f"{emulator.base_url}/_emulator"
    status, body = await post(http, f"{base}/send", {"user_id": USER, "text": "x"})
    assert status == 400 and "no bot has called" in body["description"]
    await emulator.send(1, USER, "a")
    await emulator.send(2, USER, "b")
    status, body = await post(http, f"{base}/send", {"user_id": USER, "text": "x"})
    assert status == 400 and "several bots have been seen (1, 2)" in body["description"]
    status, body = await get(http, f"{base}/stats")
    assert status == 400
    status, body = await get(http, f"{base}/stats?bot_id=2")
    assert status == 200 and body["updates_created"] == 1
    with pytest.raises(EmulatorError):
        emulator.messages(USER)


async def test_control_input_errors(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    base = f"{emulator.base_url}/_emulator"
    assert (await post(http, f"{base}/send", {"bot_id": 1, "text": "x"}))[0] == 400
    assert (await post(http, f"{base}/send", {"bot_id": 1, "user_id": "u", "text": "x"}))[0] == 400
    assert (
        await post(http, f"{base}/send", {"bot_id": 1, "user_id": 5, "chat_id": 6, "text": "x"})
    )[0] == 400
    assert (await post(http, f"{base}/faults", {"redeliver": 2}))[0] == 400
    assert (await post(http, f"{base}/faults", {"typo": 1}))[0] == 400
    async with http.post(f"{base}/send", data=b"not json") as response:
        assert response.status == 400


async def test_reset_forgets_everything(
    emulator: Emulator, bot: RawBotClient, http: aiohttp.ClientSession
) -> None:
    sent = await emulator.send(bot.bot_id, USER, "hi")
    emulator.set_faults(latency_ms=1)
    poll = asyncio.create_task(bot.ok("getUpdates", offset=sent["update_id"] + 1, timeout=30))
    await emulator.wait_for(lambda: emulator.stats()["getupdates_in_flight"] == 1)
    status, _ = await post(http, f"{emulator.base_url}/_emulator/reset", {})
    assert status == 200
    assert await asyncio.wait_for(poll, 5) == []  # the parked poll was let go
    assert emulator.faults.latency_ms == 0
    assert emulator.stats(bot.bot_id)["updates_created"] == 0
    assert emulator.messages(USER, bot.bot_id) == []
    assert await bot.error("sendMessage", chat_id=USER, text="x") == (
        400,
        "Bad Request: chat not found",
    )


async def test_redeliver_fault_repeats_a_confirmed_batch(
    emulator: Emulator, bot: RawBotClient, http: aiohttp.ClientSession
) -> None:
    status, faults = await post(
        http, f"{emulator.base_url}/_emulator/faults", {"redeliver": 1.0, "seed": 7}
    )
    assert status == 200 and faults["redeliver"] == 1.0
    sent = await emulator.send(bot.bot_id, USER, "again")
    first = await bot.ok("getUpdates")
    emulator.set_faults()  # off again: the next response is the last redelivery
    again = await bot.ok("getUpdates", offset=first[-1]["update_id"] + 1)
    assert [u["update_id"] for u in first] == [u["update_id"] for u in again] == [sent["update_id"]]
    assert await bot.ok("getUpdates", offset=first[-1]["update_id"] + 1) == []
    stats = emulator.stats()
    assert stats["updates_delivered"] == 2 and stats["updates_redelivered"] == 1


async def test_drop_after_send_performs_the_send_and_answers_500(
    emulator: Emulator, bot: RawBotClient
) -> None:
    await emulator.send(bot.bot_id, USER, "hi")
    emulator.set_faults(drop_after_send=1.0)
    status, body = await bot.call("sendMessage", chat_id=USER, text="did it go?")
    assert status == 500
    assert body == {"ok": False, "error_code": 500, "description": "Internal Server Error"}
    assert emulator.messages(USER)[-1]["text"] == "did it go?"
    assert await bot.ok("getMe")  # not a send: never dropped
    stats = emulator.stats()
    assert stats["sends_dropped"] == 1 and stats["messages_sent"] == 1


@pytest.mark.antiloop_emulator(rate_limits=False)
async def test_faults_are_reproducible_with_a_seed(emulator: Emulator, bot: RawBotClient) -> None:
    await emulator.send(bot.bot_id, USER, "hi")

    async def pattern() -> list[int]:
        emulator.set_faults(drop_after_send=0.5, seed=42)
        return [(await bot.call("sendMessage", chat_id=USER, text="x"))[0] for _ in range(12)]

    first = await pattern()
    second = await pattern()
    assert first == second and 500 in first and 200 in first


async def test_latency_fault_delays_every_request(emulator: Emulator, bot: RawBotClient) -> None:
    emulator.set_faults(latency_ms=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bot.ok("getMe")
    status, _ = await bot.call("noSuchMethod")
    assert status == 404
    assert loop.time() - started >= 2 * 0.030 * 0.9  # a lower bound: the delay happened


async def test_inject_a_raw_update(
    emulator: Emulator, bot: RawBotClient, http: aiohttp.ClientSession
) -> None:
    status, body = await post(
        http,
        f"{emulator.base_url}/_emulator/updates",
        {"bot_id": bot.bot_id, "update": {"edited_message": {"garbage": True}}},
    )
    assert status == 200
    (update,) = await bot.ok("getUpdates")
    assert update == {"update_id": body["update_id"], "edited_message": {"garbage": True}}


async def test_token_for_is_valid_and_stable() -> None:
    token = Emulator.token_for(123456)
    bot_id, secret = token.split(":")
    assert bot_id == "123456" and len(secret) == 35
    assert token == Emulator.token_for(123456) != Emulator.token_for(123457)
