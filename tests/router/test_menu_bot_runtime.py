"""examples/menu_bot.py under the real runtime: `antiloop run examples/menu_bot.py:router` in a
subprocess against the emulator on 127.0.0.1 (flood control on), a real SQLite store."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from antiloop.testing import Emulator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "menu_bot.py"
BOT = 555


async def test_menu_bot_runs_under_antiloop_run(tmp_path: Path) -> None:
    async with Emulator(rate_limits=True) as tg:
        cmd = [sys.executable, "-m", "antiloop", "run", f"{EXAMPLE}:router",
               "--token", Emulator.token_for(BOT), "--api-url", tg.base_url,
               "--store", f"sqlite:///{tmp_path}/bot.db", "--lock", f"file:{tmp_path}/lock",
               "--poll-timeout", "1"]
        with open(tmp_path / "out.log", "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            await tg.send(BOT, 1, "/start")
            menu = (await tg.wait_for_messages(1, 1, bot_id=BOT, within=20))[0]
            for _ in range(5):  # an impatient user
                await tg.click(BOT, 1, menu["message_id"], "menu:invest")
            await tg.wait_for(lambda: tg.stats(BOT)["callbacks"]["answered"] >= 5, within=20)
            await tg.click(BOT, 1, menu["message_id"], "invest:1000")
            await tg.send(BOT, 1, "/simulate 500 90")
            await tg.wait_for_messages(1, 2, bot_id=BOT, within=20)
            await tg.wait_for(lambda: tg.stats(BOT)["callbacks"]["answered"] >= 6, within=20)
            stats = tg.stats(BOT)
            bot_texts = [(m["text"], m["edits"]) for m in tg.messages(1, BOT) if m["from_bot"]]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
    log = (tmp_path / "out.log").read_text(errors="replace")
    assert code == 0, log
    assert stats["callbacks"] == {"created": 6, "answered": 6, "unanswered": 0,
                                  "answered_twice": 0, "answered_late": 0}
    assert stats["calls"]["editMessageText"] == 2  # five presses, one run; then the projection
    assert bot_texts == [
        ("Investing 1,000.00 for 365 days at 8% APR: about 80.00 return, 1,080.00 in total "
         "(simple interest; an illustration, not advice).", 2),
        ("Investing 500.00 for 90 days at 8% APR: about 9.86 return, 509.86 in total "
         "(simple interest; an illustration, not advice).", 0),
    ]
