"""`antiloop demo --json --seed 1` as a user runs it: a subprocess, figures from the emulator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import PYTHON, subprocess_env


def test_demo_json_seed_1_antiloop_side_is_clean_and_the_usual_side_is_not(tmp_path: Path) -> None:
    res = subprocess.run([PYTHON, "-m", "antiloop", "demo", "--json", "--seed", "1"],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path,
                         env=subprocess_env())
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["seed"] == 1 and out["ok"] is True
    before, after = out["before"], out["after"]
    keys = {"updates_sent", "deliveries", "handler_runs", "duplicate_replies", "spinning",
            "answered_twice", "conflicts_409", "lost", "takeover_s"}
    assert set(before) == keys and set(after) == keys
    # antiloop: what it promises, read from the emulator's transcripts and counters.
    assert after["lost"] == 0
    assert after["duplicate_replies"] == 0
    assert after["spinning"] == 0
    assert after["answered_twice"] == 0
    assert after["updates_sent"] > 100
    assert after["deliveries"] > after["updates_sent"], "the redeliver fault did not fire"
    assert after["takeover_s"] is not None, "the lock holder was not killed and replaced"
    # The usual way, under the same storm: real damage users can see.
    assert before["duplicate_replies"] > 0 or before["answered_twice"] > 0
    assert before["handler_runs"] > after["handler_runs"]
    assert before["takeover_s"] is None
    # Progress is shown (plain lines when stderr is not a TTY), and nothing lands in the cwd.
    assert "as bots usually run" in res.stderr and "under `antiloop run`" in res.stderr
    assert list(tmp_path.iterdir()) == []
