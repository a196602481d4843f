"""Shared fixtures: a controllable clock, stores on real files."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antiloop.store import MemoryStore, SQLiteStore, Store

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore(clock=clock)
    else:
        s = SQLiteStore(f"sqlite:///{tmp_path}/bot.db", clock=clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TELEGRAM_BOT_TOKEN", None)
    env.update(extra)
    return env
