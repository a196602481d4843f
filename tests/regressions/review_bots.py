"""Bots the review tests run with `antiloop run tests/regressions/review_bots.py:NAME`.

Each handler appends "<event> <update_id> <attempt> <pid>" to $ANTILOOP_TEST_LOG, like
tests/integration/bots.py, so tests/integration/harness.Fleet can read what happened.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from antiloop import Context


def _log(event: str, ctx: Context) -> None:
    line = f"{event} {ctx.update_id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.environ["ANTILOOP_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def crasher(ctx: Context) -> None:
    """'crash' takes the whole process down (an OOM kill, a segfault in a C extension, a
    supervisor's SIGKILL after a hang): the handler never returns and never raises."""
    _log("start", ctx)
    if ctx.text == "crash":
        os._exit(17)
    await ctx.reply(f"echo: {ctx.text}")
    _log("done", ctx)


async def cancels(ctx: Context) -> None:
    """'cancel' raises CancelledError out of the handler, as awaiting a task that someone
    else cancelled does (an aiohttp request cut short, a cancelled helper task)."""
    _log("start", ctx)
    if ctx.text == "cancel":
        helper = asyncio.create_task(asyncio.sleep(10))
        helper.cancel()
        await helper  # raises CancelledError into the handler
    await ctx.reply(f"echo: {ctx.text}")
    _log("done", ctx)


async def half_then_fail(ctx: Context) -> None:
    """Sends 'step 1', then fails until the file $REVIEW_FIXED exists (the operator's fix)."""
    _log("start", ctx)
    await ctx.reply(f"step 1 of {ctx.text}")
    if not Path(os.environ["REVIEW_FIXED"]).exists():
        raise RuntimeError("the database behind step 2 is down")
    await ctx.reply(f"step 2 of {ctx.text}")
    _log("done", ctx)
