"""The bot the chaos suite runs (`antiloop run tests/chaos/bots.py:router`).

Every reply is unique to what caused it, so the emulator's transcripts say exactly what was
lost and what was duplicated: a text ``T`` is answered ``echo: T``; ``/menu N`` shows a menu with
buttons ``pick:N:a`` / ``pick:N:b`` (answered with a toast, then a message ``picked N:a``) and
``edit:N`` (the menu message is edited to ``edited N``). A text starting with ``slow`` takes
0.3 s before its reply, so a fault lands while handlers are running.
"""

from __future__ import annotations

import asyncio

from antiloop import Context, Router

router = Router("chaos")


@router.command("menu")
async def menu(ctx: Context) -> None:
    n = ctx.args[0] if ctx.args else "0"
    await ctx.reply(f"menu {n}", reply_markup={"inline_keyboard": [
        [{"text": "A", "callback_data": f"pick:{n}:a"}, {"text": "B", "callback_data": f"pick:{n}:b"}],
        [{"text": "Edit", "callback_data": f"edit:{n}"}],
    ]})


@router.callback("pick:{n}:{choice}")
async def pick(ctx: Context, n: str, choice: str) -> None:
    await ctx.answer(f"you picked {choice}")
    await ctx.reply(f"picked {n}:{choice}")


@router.callback("edit:{n}")
async def edit(ctx: Context, n: str) -> None:
    await ctx.edit_text(f"edited {n}")


@router.message()
async def echo(ctx: Context) -> None:
    if (ctx.text or "").startswith("slow"):
        await asyncio.sleep(0.3)
    await ctx.reply(f"echo: {ctx.text}")
