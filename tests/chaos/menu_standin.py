"""A small menu bot, used by the demo test only while ``examples/menu_bot.py`` does not exist.

``/start`` (or ``/menu``) shows the main menu; ``menu:<page>`` opens a page (the message is
edited, the press answered with a toast); ``buy:<item>`` places an order (a new message);
``back`` returns to the main menu. Anything else is answered with a hint.
"""

from __future__ import annotations

from typing import Any

from antiloop import Context, Router

router = Router("menu")

PAGES = {"prices": "Prices: coffee 3, tea 2", "hours": "Open 8-18", "shop": "Shop: pick an item"}


def _menu() -> dict[str, Any]:
    return {"inline_keyboard": [
        [{"text": "Prices", "callback_data": "menu:prices"},
         {"text": "Hours", "callback_data": "menu:hours"}],
        [{"text": "Shop", "callback_data": "menu:shop"}],
    ]}


def _page(page: str) -> dict[str, Any]:
    rows: list[list[dict[str, str]]] = []
    if page == "shop":
        rows.append([{"text": "Coffee", "callback_data": "buy:coffee"},
                     {"text": "Tea", "callback_data": "buy:tea"}])
    rows.append([{"text": "Back", "callback_data": "back"}])
    return {"inline_keyboard": rows}


@router.command("start", "menu")
async def start(ctx: Context) -> None:
    await ctx.reply("Main menu: choose a page", reply_markup=_menu())


@router.callback("menu:{page}")
async def open_page(ctx: Context, page: str) -> None:
    await ctx.answer(f"Opening {page}")
    await ctx.edit_text(PAGES.get(page, "Unknown page"), reply_markup=_page(page))


@router.callback("buy:{item}")
async def buy(ctx: Context, item: str) -> None:
    await ctx.answer("Ordered")
    await ctx.reply(f"Order placed: one {item}")


@router.callback("back")
async def back(ctx: Context) -> None:
    await ctx.edit_text("Main menu: choose a page", reply_markup=_menu())


@router.message()
async def hint(ctx: Context) -> None:
    await ctx.reply("Send /start for the menu")
