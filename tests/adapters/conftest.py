from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from antiloop.runtime import Runtime, Settings
from antiloop.testing import Emulator


@asynccontextmanager
async def under_antiloop(handler: Any, tg: Emulator, tmp_path: Path, bot_id: int,
                         **settings: Any) -> AsyncIterator[Runtime]:
    """A real Runtime (SQLite store, flock lock) running ``handler`` in this process. The
    outbox's repeat-reply window is off, so only the ledger can keep a send from repeating."""
    options: dict[str, Any] = {"rate_limit": False, "poll_timeout": 1, "max_attempts": 3,
                               "backoff_base": 0.01, "recover_every_s": 0.2, **settings}
    rt = Runtime(handler, Settings(token=Emulator.token_for(bot_id), api_url=tg.base_url,
                                   store=f"sqlite:///{tmp_path}/bot.db",
                                   lock=f"file:{tmp_path}/x.lock", **options),
                 outbox_options={"reply_window": 0})
    task = asyncio.create_task(rt.run(install_signals=False))
    try:
        yield rt
    finally:
        rt.request_stop()
        code = await asyncio.wait_for(task, 20)
        await handler.aclose()
        assert code == 0
