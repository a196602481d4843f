"""Review: SIGTERM is answered promptly in every phase, with exit status 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from antiloop.testing import Emulator
from tests.conftest import PYTHON, subprocess_env

ECHO = str(Path(__file__).resolve().parent.parent / "integration" / "bots.py") + ":echo"


@pytest.fixture
async def silent_api() -> AsyncIterator[str]:
    """A Bot API front end that accepts the connection and never answers (a black hole)."""
    seen = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        seen.set()
        await asyncio.sleep(3600)
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_post("/bot{token}/{method}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_sigterm_while_getme_hangs_exits_promptly(tmp_path: Path, silent_api: str) -> None:
    proc = subprocess.Popen(
        [PYTHON, "-m", "antiloop", "run", ECHO, "--token", Emulator.token_for(777305),
         "--api-url", silent_api, "--store", f"sqlite:///{tmp_path}/bot.db"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=subprocess_env())
    try:
        lock = tmp_path / ".bot_instance.lock"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (lock.exists() and lock.stat().st_size):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # now inside getMe
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            code = await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"still running {time.monotonic() - t0:.1f} s after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        assert proc.stderr is not None
        proc.stderr.close()


async def test_a_draining_holder_is_not_reported_unresponsive(tmp_path: Path) -> None:
    from tests.integration.harness import Fleet, wait_until

    async with Emulator(rate_limits=False) as tg:
        f = Fleet(tmp_path, tg.base_url, Emulator.token_for(777306), "echo",
                  "--drain-timeout", "8")
        (proc,) = f.start(1)
        try:
            await wait_until(lambda: f.holder_pid() is not None, timeout=8, what="a holder")
            await tg.send(777306, 1, "hang")  # a long handler: the drain waits for it
            await wait_until(lambda: len(f.events("start")) == 1, timeout=5, what="the handler")
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(6.0)
            assert proc.poll() is None, "the drain ended early"
            state = (await asyncio.to_thread(f.status))["lock"]["state"]
            assert state == "alive", f"a holder draining on SIGTERM is reported {state!r}"
        finally:
            f.stop_all()
