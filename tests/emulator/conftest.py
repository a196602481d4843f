"""Fixtures for the emulator's own tests (the `emulator` fixture comes from the plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from antiloop.testing import Emulator
from antiloop.testing.client import RawBotClient

BOT_ID = 111


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def bot(emulator: Emulator, http: aiohttp.ClientSession) -> RawBotClient:
    """A raw client for bot 111 on the emulator."""
    return RawBotClient(http, emulator.base_url, Emulator.token_for(BOT_ID))
