"""A menu bot in the shape of the DeFi assistant that motivated antiloop, with no services.

Run it (against Telegram, or the emulator with ``--api-url``)::

    antiloop run examples/menu_bot.py:router

Every text and every ``callback_data`` is deterministic, so a script can drive it.

Commands
    ``/start``, ``/menu``   reply with the main menu (a new message with inline buttons)
    ``/simulate AMOUNT [DAYS]``  reply with a simple-interest projection at 8 % APR
    ``/help``               reply with the list of commands
    any other text          a short echo with a hint (the same text again within 2 s is
                            ignored: ``dedupe=2.0``)

callback_data (every button edits the menu message in place)
    ``menu:main``           the main menu: Invest / Explore / Account
    ``menu:invest``         the Invest menu: 100 / 1000 / 10000, Back (``menu:main``)
    ``menu:explore``        the Explore menu: Pools / FAQ, Back (``menu:main``)
    ``menu:account``        the Account menu: Profile / Settings, Back (``menu:main``)
    ``invest:100``, ``invest:1000``, ``invest:10000``  a projection; Back (``menu:invest``)
    ``explore:pools``, ``explore:faq``                  an explainer; Back (``menu:explore``)
    ``account:profile``, ``account:settings``           account info; Back (``menu:account``)
"""

from __future__ import annotations

from typing import Any

from antiloop import Context, Router

router = Router("menu_bot")

APR = 0.08
AMOUNTS = (100, 1000, 10000)

Keyboard = dict[str, Any]


def keyboard(*rows: list[tuple[str, str]]) -> Keyboard:
    return {"inline_keyboard": [[{"text": t, "callback_data": d} for t, d in row] for row in rows]}


BACK_MAIN = [("« Back", "menu:main")]
MENUS: dict[str, tuple[str, Keyboard]] = {
    "main": ("Main menu. What would you like to do?", keyboard(
        [("Invest", "menu:invest"), ("Explore", "menu:explore"), ("Account", "menu:account")])),
    "invest": ("Invest: choose an amount to see a projection.", keyboard(
        [(f"{a:,}", f"invest:{a}") for a in AMOUNTS], BACK_MAIN)),
    "explore": ("Explore: learn how pools work.", keyboard(
        [("Pools", "explore:pools"), ("FAQ", "explore:faq")], BACK_MAIN)),
    "account": ("Account: your profile and settings.", keyboard(
        [("Profile", "account:profile"), ("Settings", "account:settings")], BACK_MAIN)),
}
EXPLAINERS = {
    "pools": "A liquidity pool holds two tokens; traders swap against it and pay a fee that "
             "goes to the providers.",
    "faq": "FAQ: returns are never guaranteed; this bot only illustrates the arithmetic.",
}
HELP = ("Commands: /start (menu), /simulate AMOUNT [DAYS] (a projection at 8% APR), /help. "
        "Buttons edit the menu in place.")


def projection(amount: float, days: int = 365) -> str:
    gain = amount * APR * days / 365
    return (f"Investing {amount:,.2f} for {days} days at {APR:.0%} APR: about {gain:,.2f} "
            f"return, {amount + gain:,.2f} in total (simple interest; an illustration, not advice).")


@router.command("start", "menu")
async def start(ctx: Context) -> None:
    text, markup = MENUS["main"]
    await ctx.reply(text, reply_markup=markup)


@router.command("help")
async def help_(ctx: Context) -> None:
    await ctx.reply(HELP)


@router.command("simulate")
async def simulate(ctx: Context) -> None:
    try:
        amount = float(ctx.args[0].replace(",", ""))
        days = int(ctx.args[1]) if len(ctx.args) > 1 else 365
        if not (0 < amount <= 1e12 and 0 < days <= 3650):
            raise ValueError
    except (IndexError, ValueError):
        await ctx.reply("Usage: /simulate AMOUNT [DAYS], e.g. /simulate 1000 or /simulate 500 90")
        return
    await ctx.reply(projection(amount, days))


@router.callback("menu:{item}")
async def menu(ctx: Context, item: str) -> None:
    text, markup = MENUS.get(item, MENUS["main"])
    await ctx.edit_text(text, reply_markup=markup)


@router.callback("invest:{amount:int}")
async def invest(ctx: Context, amount: int) -> None:
    await ctx.edit_text(projection(amount), reply_markup=keyboard([("« Back", "menu:invest")]))


@router.callback("explore:{topic}")
async def explore(ctx: Context, topic: str) -> None:
    text = EXPLAINERS.get(topic, EXPLAINERS["faq"])
    await ctx.edit_text(text, reply_markup=keyboard([("« Back", "menu:explore")]))


@router.callback("account:{action}")
async def account(ctx: Context, action: str) -> None:
    if action == "profile":
        text = f"Profile: Telegram user {ctx.user_id}. No wallet connected (this is a demo)."
    else:
        text = "Settings: notifications off, risk profile moderate (a demo: nothing is stored)."
    await ctx.edit_text(text, reply_markup=keyboard([("« Back", "menu:account")]))


@router.message(content_types="text", dedupe=2.0)
async def echo(ctx: Context) -> None:
    await ctx.reply(f"You said: {ctx.text}\n{HELP}")
