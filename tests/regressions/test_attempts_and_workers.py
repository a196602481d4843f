"""Review: max-attempts and worker survival, with real `antiloop run` processes."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antiloop.testing import Emulator
from tests.integration.harness import Fleet, wait_until

BOT = 777301
BOTS = str(Path(__file__).resolve().parent / "review_bots.py")


@pytest.fixture
async def tg() -> AsyncIterator[Emulator]:
    async with Emulator(rate_limits=False) as emu:
        yield emu


def fleet(tmp_path: Path, tg: Emulator, target: str, *extra: str) -> Fleet:
    return Fleet(tmp_path, tg.base_url, Emulator.token_for(BOT), f"{BOTS}:{target}", *extra)


def replies(tg: Emulator, chat: int) -> list[str]:
    return [m["text"] for m in tg.messages(chat, bot_id=BOT) if m["from_bot"]]


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return await asyncio.to_thread(proc.wait, timeout)
    except subprocess.TimeoutExpired:
        return None


async def test_update_that_kills_the_process_is_parked_after_max_attempts(
        tmp_path: Path, tg: Emulator) -> None:
    f = fleet(tmp_path, tg, "crasher", "--max-attempts", "2")
    (proc,) = f.start(1)
    await wait_until(lambda: f.holder_pid() is not None, timeout=8, what="a lock holder")
    await tg.send(BOT, 1, "crash")
    runs = 1
    try:
        # A supervisor (systemd Restart=always, a k8s pod) restarts it each time it dies.
        for _ in range(4):
            code = await _wait_exit(proc, 6)
            if code is None:
                break  # it stayed up: the poison update was parked
            assert code == 17
            (proc,) = f.start(1)
            runs += 1
        starts = Counter(uid for uid, _, _ in f.events("start"))
        assert max(starts.values()) <= 2, (
            f"the poison update ran {max(starts.values())} times in {runs} process starts "
            "with --max-attempts 2")
    finally:
        f.stop_all()


async def test_handler_raising_cancelled_error_does_not_wedge_its_chat(
        tmp_path: Path, tg: Emulator) -> None:
    f = fleet(tmp_path, tg, "cancels", "--max-attempts", "2")
    f.start(1)
    try:
        await wait_until(lambda: f.holder_pid() is not None, timeout=8, what="a lock holder")
        await tg.send(BOT, 1, "cancel")
        await tg.send(BOT, 1, "after")
        await tg.send(BOT, 2, "other chat")
        await wait_until(lambda: "echo: other chat" in replies(tg, 2), timeout=5,
                         what="the other chat")
        await wait_until(lambda: "echo: after" in replies(tg, 1), timeout=5,
                         what="the update queued behind the cancelled one in chat 1")
    finally:
        f.stop_all()


async def test_dead_letter_retry_does_not_resend_what_was_already_sent(
        tmp_path: Path, tg: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = tmp_path / "fixed"
    monkeypatch.setenv("REVIEW_FIXED", str(fixed))
    f = fleet(tmp_path, tg, "half_then_fail", "--max-attempts", "2")
    f.start(1)
    try:
        await wait_until(lambda: f.holder_pid() is not None, timeout=8, what="a lock holder")
        await tg.send(BOT, 1, "order")
        await wait_until(lambda: f.status()["inbox"]["dead"] == 1, timeout=6, what="a dead letter")
        # In-process retries already skip the recorded send (attempt 2 did not repeat it).
        assert replies(tg, 1) == ["step 1 of order"]
    finally:
        assert f.stop_all() == [0]
    (uid,) = {u for u, _, _ in f.events("start")}
    fixed.touch()
    # The operator retries later; the outbox's 3 s repeat-reply window is long closed then.
    await asyncio.sleep(3.2)
    res = f.cli("dead-letters", "retry", str(uid), *f.args())
    assert res.returncode == 0, res.stdout + res.stderr
    f.start(1)
    try:
        await wait_until(lambda: len(f.done_counts()) == 1, timeout=6, what="the retried update")
        assert replies(tg, 1) == ["step 1 of order", "step 2 of order"]
    finally:
        f.stop_all()
