"""Bots that the integration tests run with `antiloop run tests/integration/bots.py:NAME`.

Each handler appends one line per run to the file named by $ANTILOOP_TEST_LOG (shared by every
process): "<event> <update_id> <attempt> <pid>". O_APPEND makes each line atomic.
"""

from __future__ import annotations

import asyncio
import os

from antiloop import Context


def _log(event: str, ctx: Context) -> None:
    line = f"{event} {ctx.update_id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(os.environ["ANTILOOP_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def echo(ctx: Context) -> None:
    """Reply with the text; 'slow' texts take a while, so a kill lands mid-handler."""
    _log("start", ctx)
    text = ctx.text or ""
    if text.startswith("slow"):
        await asyncio.sleep(0.05)
    if text == "hang" and ctx.attempt == 1:
        await asyncio.sleep(3600)  # killed here, between claim and complete
    await ctx.reply(f"echo: {text}")
    _log("done", ctx)


async def flaky(ctx: Context) -> None:
    """'poison' always fails; everything else is echoed."""
    _log("start", ctx)
    if ctx.text == "poison":
        raise RuntimeError("this update always fails")
    await ctx.reply(f"echo: {ctx.text}")
    _log("done", ctx)


async def three_sends(ctx: Context) -> None:
    """Sends three messages; on its first attempt it stops dead after the first one."""
    _log("start", ctx)
    await ctx.reply("part 1")
    # A call's record is durable before the update's next call: after this one, "part 1" is in
    # the ledger for sure (a kill between a send and its group commit is the admitted window).
    await ctx.call("sendChatAction", chat_id=ctx.chat_id, action="typing")
    if ctx.attempt == 1:
        _log("hang", ctx)
        await asyncio.sleep(3600)
    await ctx.reply("part 2")
    await ctx.reply("part 3")
    _log("done", ctx)
