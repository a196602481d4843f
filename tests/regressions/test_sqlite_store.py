"""Review: the SQLite store's group commit, close() and error messages, on real files."""

from __future__ import annotations

import asyncio
import resource
import signal
import sqlite3
import subprocess
from pathlib import Path

from antiloop.errors import StoreError
from antiloop.store import SQLiteStore
from antiloop.testing import Emulator
from tests.conftest import PYTHON, subprocess_env

ECHO = str(Path(__file__).resolve().parent.parent / "integration" / "bots.py") + ":echo"


async def test_close_never_loses_a_write_or_answers_it_with_a_non_store_error(
        tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/bot.db")
    await store.open()
    outcome: dict[str, str] = {}

    async def two_writes() -> None:  # e.g. complete() then record_send(), or fail() then ...
        await store.count_suppressed(1, "first")
        try:
            await store.count_suppressed(1, "second")
            outcome["second"] = "committed"
        except StoreError:
            outcome["second"] = "refused with StoreError"
        except BaseException as exc:
            outcome["second"] = f"{type(exc).__name__}"

    writer = asyncio.create_task(two_writes())
    await asyncio.sleep(0)  # the first write is queued
    await store.close()
    await asyncio.wait_for(writer, 5)
    rows = dict(sqlite3.connect(tmp_path / "bot.db").execute(
        "SELECT reason, n FROM suppressed").fetchall())
    assert outcome["second"] in ("committed", "refused with StoreError"), outcome
    if outcome["second"] == "committed":
        assert rows.get("second") == 1


def _small_file_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))


def test_disk_full_while_creating_the_store_names_the_disk(tmp_path: Path) -> None:
    res = subprocess.run(
        [PYTHON, "-m", "antiloop", "run", ECHO, "--token", Emulator.token_for(777303),
         "--api-url", "http://127.0.0.1:9", "--store", f"sqlite:///{tmp_path}/bot.db"],
        capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=10,
        preexec_fn=_small_file_limit)
    assert res.returncode == 2, res.stderr[-400:]
    assert "cannot rollback" not in res.stderr
    assert "Free disk space" in res.stderr, res.stderr[-400:]
