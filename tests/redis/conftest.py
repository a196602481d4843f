"""Fixtures for the Redis backend tests: a fresh key prefix per test, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from antiloop.store.redis import RedisStore
from tests.conftest import FakeClock
from tests.redis.keys import delete_prefix


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"antiloop-test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_prefix(redis_url, name)


@pytest.fixture
def url(redis_url: str, prefix: str) -> str:
    """The test Redis with this test's prefix, as a user would write it."""
    return f"{redis_url}?prefix={prefix}"


@pytest.fixture
async def rstore(url: str, clock: FakeClock) -> AsyncIterator[RedisStore]:
    s = RedisStore(url, clock=clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
