"""`antiloop run tests/adapters/bots.py:<name>` in real processes: the first one is SIGKILLed in
the middle of a handler, after its first send; the next one re-runs the update and skips it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from antiloop.testing import Emulator
from tests.conftest import subprocess_env

BOTS = Path(__file__).resolve().parent / "bots.py"
ROOT = Path(__file__).resolve().parents[2]
USER = 7101

pytestmark = pytest.mark.antiloop_emulator(rate_limits=False)


@pytest.mark.parametrize(("framework", "name", "bot_id"), [
    ("ptb", "application", 3101), ("aiogram", "dp", 3102), ("telebot", "bot", 3103),
    ("async_telebot", "bot", 3104)])
async def test_killed_mid_handler_then_resumed(emulator: Emulator, tmp_path: Path,
                                               framework: str, name: str, bot_id: int) -> None:
    token = Emulator.token_for(bot_id)
    marker = tmp_path / "marker"
    env = subprocess_env(ANTILOOP_TEST_FRAMEWORK=framework, ANTILOOP_TEST_TOKEN=token,
                         ANTILOOP_TEST_API_URL=emulator.base_url,
                         ANTILOOP_TEST_MARKER=str(marker), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "antiloop", "run", f"{BOTS}:{name}", "--token", token,
           "--api-url", emulator.base_url, "--store", f"sqlite:///{tmp_path}/bot.db",
           "--lock", f"file:{tmp_path}/lock", "--poll-timeout", "1", "--rate-limit", "off"]

    def start(n: int) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"run{n}.log", "wb") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=tmp_path)

    def bot_texts() -> list[str]:
        return [m["text"] for m in emulator.messages(USER, bot_id) if m["from_bot"]]

    first = start(1)
    try:
        await emulator.send(bot_id, USER, "/crash")
        await emulator.wait_for(lambda: bot_texts() == ["/crash"] and marker.exists(), within=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    second = start(2)
    try:
        await emulator.wait_for(lambda: bot_texts() == ["/crash", "after crash"], within=30)
        await emulator.send(bot_id, USER, "still there?")  # and it echoes as usual
        await emulator.wait_for(lambda: bot_texts()[-1:] == ["still there?"], within=30)
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(20)
    logs = "".join((tmp_path / f"run{n}.log").read_text(errors="replace") for n in (1, 2))
    assert code == 0, logs
    stats = emulator.stats(bot_id)
    assert stats["calls"]["copyMessage"] == 1, logs  # not repeated by the second process
    assert bot_texts() == ["/crash", "after crash", "still there?"]
    assert stats["getupdates_pollers_max"] == 1 and stats["conflicts_409"] == 0
    assert "already made before a restart; skipped" in logs
