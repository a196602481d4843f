"""Review: the polling loop must survive every Bot API failure it can meet.

A tiny stand-in for api.telegram.org (real HTTP on loopback) plays a Bot API whose
deleteWebhook fails once with a 5xx, as Telegram's front ends do during an incident."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from antiloop.testing import Emulator
from tests.conftest import PYTHON, subprocess_env

ECHO = str(Path(__file__).resolve().parent.parent / "integration" / "bots.py") + ":echo"


class FlakyTelegram:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.webhook = True
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls[method] += 1
        result: Any
        if method == "getMe":
            result = {"id": 777304, "is_bot": True, "first_name": "b", "username": "b_bot"}
        elif method == "deleteWebhook":
            if self.calls[method] == 1:
                return web.json_response({"ok": False, "error_code": 502,
                                          "description": "Bad Gateway"}, status=502)
            self.webhook = False
            result = True
        elif method == "getUpdates":
            if self.webhook:
                return web.json_response({"ok": False, "error_code": 409, "description":
                                          "Conflict: can't use getUpdates method while webhook "
                                          "is active; use deleteWebhook to delete the webhook "
                                          "first"}, status=409)
            await asyncio.sleep(0.2)
            result = []
        else:
            result = True
        return web.json_response({"ok": True, "result": result})


@pytest.fixture
async def flaky() -> AsyncIterator[FlakyTelegram]:
    tg = FlakyTelegram()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", tg.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    tg.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield tg
    finally:
        await runner.cleanup()


async def test_delete_webhook_failing_once_does_not_end_polling(
        tmp_path: Path, flaky: FlakyTelegram) -> None:
    proc = subprocess.Popen(
        [PYTHON, "-m", "antiloop", "run", ECHO, "--token", Emulator.token_for(777304),
         "--api-url", flaky.url, "--store", f"sqlite:///{tmp_path}/bot.db", "--poll-timeout", "1",
         "--delete-webhook"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
        env=subprocess_env(ANTILOOP_TEST_LOG=str(tmp_path / "log")))
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and proc.poll() is None and not (
                flaky.calls["deleteWebhook"] >= 2 and flaky.calls["getUpdates"] >= 3):
            await asyncio.sleep(0.05)
        assert proc.poll() is None, (
            f"antiloop exited {proc.returncode} after deleteWebhook failed once; calls "
            f"{dict(flaky.calls)}")
        assert flaky.calls["deleteWebhook"] >= 2
    finally:
        if proc.poll() is None:
            proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        assert proc.stdout is not None
        proc.stdout.close()
