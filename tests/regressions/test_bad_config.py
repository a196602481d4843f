"""Review: bad input to `antiloop` must give one clear line and exit 2, never a traceback,
and must be refused before the process takes the lock and starts handling updates."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antiloop.testing import Emulator
from tests.conftest import PYTHON, subprocess_env
from tests.integration.harness import Fleet, wait_until

BOT = 777302
TOKEN = Emulator.token_for(BOT)
ECHO = str(Path(__file__).resolve().parent.parent / "integration" / "bots.py") + ":echo"


@pytest.fixture
async def tg() -> AsyncIterator[Emulator]:
    async with Emulator(rate_limits=False) as emu:
        yield emu


def antiloop(cwd: Path, *args: str, timeout: float = 8, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "antiloop", *args], capture_output=True, text=True,
                          cwd=cwd, env=subprocess_env(**env), timeout=timeout)


def test_bad_concurrency_env_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text("async def handle(ctx):\n    pass\n")
    res = antiloop(tmp_path, "run", "bot.py:handle", "--token", "123:abc",
                   "--store", f"sqlite:///{tmp_path}/x.db", ANTILOOP_CONCURRENCY="sixteen")
    assert "Traceback" not in res.stderr, res.stderr[-400:]
    assert res.returncode == 2
    assert "sixteen" in res.stderr and "--concurrency" in res.stderr
    # A command that does not use the variable is not disturbed by it.
    res = antiloop(tmp_path, "status", "--store", f"sqlite:///{tmp_path}/x.db",
                   ANTILOOP_CONCURRENCY="sixteen")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("target", [":router", ".bot:router"])
def test_target_without_a_module_is_a_clear_error(tmp_path: Path, target: str) -> None:
    res = antiloop(tmp_path, "run", target, "--token", TOKEN, "--api-url", "http://127.0.0.1:9",
                   "--store", f"sqlite:///{tmp_path}/x.db")
    assert "Traceback" not in res.stderr, res.stderr[-400:]
    assert res.returncode == 2 and "TARGET" in res.stderr


async def test_concurrency_zero_is_a_clear_error(tmp_path: Path, tg: Emulator) -> None:
    res = await asyncio.to_thread(
        antiloop, tmp_path, "run", ECHO, "--token", TOKEN, "--api-url", tg.base_url,
        "--store", f"sqlite:///{tmp_path}/x.db", "--concurrency", "0")
    assert "Traceback" not in res.stderr, res.stderr[-400:]
    assert res.returncode == 2


async def test_bad_webhook_url_is_refused_before_touching_the_inbox(
        tmp_path: Path, tg: Emulator) -> None:
    f = Fleet(tmp_path, tg.base_url, TOKEN, "echo")
    f.start(1)
    try:
        await wait_until(lambda: f.holder_pid() is not None, timeout=8, what="a lock holder")
        await tg.send(BOT, 1, "hang")  # attempt 1 hangs: killed between claim and complete
        await wait_until(lambda: len(f.events("start")) == 1, timeout=5, what="the handler")
        pid = f.holder_pid()
        assert pid is not None
        f.kill(pid)
    finally:
        f.stop_all()
    (bad,) = f.start(1, "--webhook-url", "ftp://bot.example.com/hook")
    code = await asyncio.to_thread(bad.wait, 8)
    assert code == 2 and "--webhook-url" in f.output(1)
    # The misconfigured run must not have run (or half-run) the unfinished update.
    assert len(f.events("start")) == 1, f.events("start")
