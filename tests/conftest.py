"""Shared fixtures: a controllable clock, stores on real files."""

from __future__ import annotations

import os
import sys
import uuid
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


REDIS_URL = os.environ.get("ANTILOOP_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the tests use. Missing: the test fails when CI=true, else it is skipped."""
    try:
        from redis.client import Redis
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover
        reason = "redis-py is not installed (pip install 'antiloop[redis]')"
    else:
        client = Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
            return REDIS_URL
        except RedisError as exc:
            reason = f"no Redis at {REDIS_URL.split('@')[-1]} ({exc}); start redis-server"
        finally:
            client.close()
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    s: Store
    prefix = ""
    if request.param == "memory":
        s = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        s = SQLiteStore(f"sqlite:///{tmp_path}/bot.db", clock=clock)
    else:
        from antiloop.store.redis import RedisStore
        from tests.redis.keys import delete_prefix

        url = request.getfixturevalue("redis_url")
        prefix = f"antiloop-test-{uuid.uuid4().hex[:12]}"
        s = RedisStore(url, clock=clock, prefix=prefix)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
        if prefix:
            delete_prefix(url, prefix)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TELEGRAM_BOT_TOKEN", None)
    env.update(extra)
    return env
