"""Webhooks: validation, secret header, retry schedule, per-chat order, max_connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from antiloop.testing import Emulator
from antiloop.testing.client import RawBotClient

USER = 5001
FAST = {"time_scale": 0.001, "webhook_timeout": 10_000.0}  # delays in ms, timeout 10 s

Policy = Callable[[dict[str, Any], int], Awaitable[web.Response]]


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every POST."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.policy: Policy | None = None
        self.in_flight = 0
        self.in_flight_max = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        update = await request.json()
        self.requests.append((update, dict(request.headers)))
        seen = sum(1 for u, _ in self.requests if u["update_id"] == update["update_id"])
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            if self.policy is not None:
                return await self.policy(update, seen)
            return web.Response(text="ok")
        finally:
            self.in_flight -= 1

    def texts(self) -> list[str]:
        return [u["message"]["text"] for u, _ in self.requests if "message" in u]


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded: 5 s) for a condition the emulator is not told about."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 5 s")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def test_set_webhook_validation(bot: RawBotClient) -> None:
    cases = [
        (
            {"url": "http://example.org/hook"},
            "Bad Request: bad webhook: An HTTPS URL must be provided for webhook",
        ),
        (
            {"url": "https://example.org:8080/hook"},
            "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443",
        ),
        ({"url": "ftp://127.0.0.1/x"}, "Bad Request: invalid webhook URL specified"),
        (
            {"url": "http://127.0.0.1:9/x", "secret_token": "bad token!"},
            "Bad Request: secret token contains unallowed characters",
        ),
        (
            {"url": "http://127.0.0.1:9/x", "secret_token": "a" * 257},
            "Bad Request: secret token is too long",
        ),
        (
            {"url": "http://127.0.0.1:9/x", "max_connections": 0},
            "Bad Request: max_connections must be between 1 and 100",
        ),
        (
            {"url": "http://127.0.0.1:9/x", "max_connections": 101},
            "Bad Request: max_connections must be between 1 and 100",
        ),
    ]
    for params, description in cases:
        assert await bot.error("setWebhook", **params) == (400, description), params
    assert await bot.ok(
        "setWebhook", url="https://example.org:8443/hook", secret_token="A-z_0" * 50
    )
    info = await bot.ok("getWebhookInfo")
    assert info["url"] == "https://example.org:8443/hook" and info["max_connections"] == 40
    await bot.ok("deleteWebhook")


async def test_webhook_info_and_descriptions(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    assert await bot.ok("getWebhookInfo") == {
        "url": "",
        "has_custom_certificate": False,
        "pending_update_count": 0,
    }
    _, body = await bot.call(
        "setWebhook", url=receiver.url, max_connections=7, allowed_updates=["message"]
    )
    assert body == {"ok": True, "result": True, "description": "Webhook was set"}
    _, body = await bot.call(
        "setWebhook", url=receiver.url, max_connections=7, allowed_updates=["message"]
    )
    assert body["description"] == "Webhook is already set"
    info = await bot.ok("getWebhookInfo")
    assert info == {
        "url": receiver.url,
        "has_custom_certificate": False,
        "pending_update_count": 0,
        "max_connections": 7,
        "allowed_updates": ["message"],
    }
    _, body = await bot.call("deleteWebhook")
    assert body["description"] == "Webhook was deleted"
    _, body = await bot.call("deleteWebhook")
    assert body["description"] == "Webhook is already deleted"


async def test_delivers_json_with_the_secret_header(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    await bot.ok("setWebhook", url=receiver.url, secret_token="s3cret_-X")
    sent = await emulator.send(bot.bot_id, USER, "hello hook")
    await emulator.wait_for(lambda: len(receiver.requests) == 1)
    update, headers = receiver.requests[0]
    assert update["update_id"] == sent["update_id"]
    assert update["message"]["text"] == "hello hook"
    assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cret_-X"
    assert headers["Content-Type"].startswith("application/json")
    await emulator.wait_for(lambda: emulator.stats()["updates_pending"] == 0)
    stats = emulator.stats()
    assert stats["webhook_attempts"] == 1 and stats["updates_delivered"] == 1


async def test_no_secret_no_header(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.send(bot.bot_id, USER, "x")
    await emulator.wait_for(lambda: len(receiver.requests) == 1)
    assert "X-Telegram-Bot-Api-Secret-Token" not in receiver.requests[0][1]


async def test_pending_updates_are_delivered_when_the_webhook_is_set(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    for i in range(3):
        await emulator.send(bot.bot_id, USER, f"queued {i}")
    assert (await bot.ok("getWebhookInfo"))["pending_update_count"] == 3
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.wait_for(lambda: len(receiver.requests) == 3)
    assert receiver.texts() == ["queued 0", "queued 1", "queued 2"]


@pytest.mark.antiloop_emulator(**FAST)
async def test_retry_schedule_on_failure(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    async def fail_eight_times(update: dict[str, Any], seen: int) -> web.Response:
        return web.Response(status=500 if seen <= 8 else 200)

    receiver.policy = fail_eight_times
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.send(bot.bot_id, USER, "retry me")
    await emulator.wait_for(lambda: emulator.stats()["updates_pending"] == 0, within=10)
    log = emulator.webhook_log()
    assert [entry["ok"] for entry in log] == [False] * 8 + [True]
    delays = [entry["next_delay"] for entry in log]
    assert delays[:6] == [0.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert all(60.0 <= d <= 120.0 for d in delays[6:8])
    assert delays[8] is None
    assert log[0]["error"] == "Wrong response from the webhook: 500 Internal Server Error"
    info = await bot.ok("getWebhookInfo")
    assert (
        info["last_error_message"] == "Wrong response from the webhook: 500 Internal Server Error"
    )
    assert isinstance(info["last_error_date"], int)
    stats = emulator.stats()
    assert stats["webhook_attempts"] == 9 and stats["webhook_failures"] == 8
    assert stats["updates_delivered"] == 9


@pytest.mark.antiloop_emulator(**FAST)
async def test_retry_after_header_is_honoured(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    async def busy_once(update: dict[str, Any], seen: int) -> web.Response:
        if seen == 1:
            return web.Response(status=429, headers={"Retry-After": "7"})
        return web.Response(text="ok")

    receiver.policy = busy_once
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.send(bot.bot_id, USER, "later")
    await emulator.wait_for(lambda: emulator.stats()["updates_pending"] == 0)
    log = emulator.webhook_log()
    assert [(e["status"], e["next_delay"]) for e in log] == [(429, 7.0), (200, None)]


@pytest.mark.antiloop_emulator(time_scale=0.001, webhook_timeout=60.0)
async def test_a_slow_answer_times_out_and_is_retried(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def hang_first(update: dict[str, Any], seen: int) -> web.Response:
        if seen == 1:
            await release.wait()  # longer than 60 s * 0.001
        return web.Response(text="ok")

    receiver.policy = hang_first
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.send(bot.bot_id, USER, "slow")
    await emulator.wait_for(lambda: emulator.stats()["updates_pending"] == 0)
    release.set()
    log = emulator.webhook_log()
    assert [e["error"] for e in log] == ["Read timeout expired", None]
    assert len(receiver.requests) == 2


@pytest.mark.antiloop_emulator(**FAST)
async def test_a_failing_update_blocks_only_its_own_chat(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    group = -777

    async def fail_a1_until_b_arrives(update: dict[str, Any], seen: int) -> web.Response:
        text = update["message"]["text"]
        if text == "a1" and "b1" not in receiver.texts() and seen < 20:
            return web.Response(status=503)
        return web.Response(text="ok")

    receiver.policy = fail_a1_until_b_arrives
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.send(bot.bot_id, USER, "a1")
    await emulator.send(bot.bot_id, USER, "a2")
    await emulator.send(bot.bot_id, 6001, "b1", chat_id=group)
    await emulator.wait_for(lambda: emulator.stats()["updates_pending"] == 0)
    texts = receiver.texts()
    a_chat = [t for t in texts if t.startswith("a")]
    # a1 retried until it succeeded, and only then a2
    assert a_chat[-1] == "a2" and a_chat.count("a2") == 1
    assert set(a_chat[:-1]) == {"a1"} and len(a_chat) >= 3
    # b1 went through while a1 was still failing (else a1 would have failed 20 times)
    last_a1 = max(i for i, t in enumerate(texts) if t == "a1")
    assert texts.index("b1") < last_a1
    assert a_chat.count("a1") < 20


@pytest.mark.antiloop_emulator(**FAST)
async def test_at_most_max_connections_in_flight(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    gate = asyncio.Event()

    async def hold(update: dict[str, Any], seen: int) -> web.Response:
        await gate.wait()
        return web.Response(text="ok")

    receiver.policy = hold
    await bot.ok("setWebhook", url=receiver.url, max_connections=2)
    for user in range(7001, 7006):
        await emulator.send(bot.bot_id, user, f"from {user}")
    await until(lambda: receiver.in_flight == 2)
    await asyncio.sleep(0.05)  # give a third request every chance to arrive
    assert receiver.in_flight == 2
    gate.set()
    await emulator.wait_for(lambda: emulator.stats()["updates_pending"] == 0)
    assert receiver.in_flight_max == 2
    assert emulator.stats()["webhook_in_flight_max"] == 2
    assert len(receiver.requests) == 5


async def test_drop_pending_updates(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    for i in range(3):
        await emulator.send(bot.bot_id, USER, f"old {i}")
    assert await bot.ok("deleteWebhook", drop_pending_updates=True) is True
    assert await bot.ok("getUpdates") == []
    for i in range(2):
        await emulator.send(bot.bot_id, USER, f"older {i}")
    await bot.ok("setWebhook", url="http://127.0.0.1:9/nowhere", drop_pending_updates=True)
    assert (await bot.ok("getWebhookInfo"))["pending_update_count"] == 0
    await bot.ok("deleteWebhook")
    await emulator.send(bot.bot_id, USER, "new")
    assert [u["message"]["text"] for u in await bot.ok("getUpdates")] == ["new"]


@pytest.mark.antiloop_emulator(**FAST)
async def test_undelivered_updates_stay_pending_after_delete_webhook(
    emulator: Emulator, bot: RawBotClient
) -> None:
    await bot.ok("setWebhook", url="http://127.0.0.1:9/closed-port")
    sent = await emulator.send(bot.bot_id, USER, "stuck")
    await emulator.wait_for(lambda: emulator.stats()["webhook_failures"] >= 2)
    info = await bot.ok("getWebhookInfo")
    assert info["pending_update_count"] == 1
    assert info["last_error_message"] == "Connection refused"
    await bot.ok("deleteWebhook")
    assert [u["update_id"] for u in await bot.ok("getUpdates")] == [sent["update_id"]]


async def test_a_method_in_the_webhook_answer_is_run(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    async def reply(update: dict[str, Any], seen: int) -> web.Response:
        chat_id = update["message"]["chat"]["id"]
        body = {"method": "sendMessage", "chat_id": chat_id, "text": "from the answer"}
        return web.Response(text=json.dumps(body), content_type="application/json")

    receiver.policy = reply
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.send(bot.bot_id, USER, "hi")
    (reply_message,) = await emulator.wait_for_messages(USER, 1)
    assert reply_message["text"] == "from the answer"


@pytest.mark.antiloop_emulator(**FAST)
async def test_webhook_fail_first_fault(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    emulator.set_faults(webhook_fail_first=2)
    await bot.ok("setWebhook", url=receiver.url)
    await emulator.send(bot.bot_id, USER, "one")
    await emulator.send(bot.bot_id, USER, "two")
    await emulator.wait_for(lambda: emulator.stats()["updates_pending"] == 0)
    # the receiver saw every attempt; the first two of each counted as 500
    assert receiver.texts() == ["one"] * 3 + ["two"] * 3
    assert [e["ok"] for e in emulator.webhook_log()] == [False, False, True] * 2


@pytest.mark.antiloop_emulator(**FAST)
async def test_webhook_redeliver_fault(
    emulator: Emulator, bot: RawBotClient, receiver: Receiver
) -> None:
    emulator.set_faults(redeliver=1.0, seed=1)
    await bot.ok("setWebhook", url=receiver.url)
    sent = await emulator.send(bot.bot_id, USER, "twice")
    await emulator.wait_for(lambda: len(receiver.requests) == 2)
    assert [u["update_id"] for u, _ in receiver.requests] == [sent["update_id"]] * 2
    assert emulator.stats()["updates_redelivered"] == 1
