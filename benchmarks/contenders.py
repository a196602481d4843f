"""Echo bots for the throughput benchmark, each polling the emulator its own way.

    python benchmarks/contenders.py bare|aiogram|ptb|ptb-concurrent API_URL TOKEN

``bare``: no framework, no durability: getUpdates, then every reply of the batch at once
(the emulator's own ceiling on this machine). The others are the frameworks' own polling
loops, unguarded (they confirm the offset before their handlers finish).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


async def bare(api_url: str, token: str) -> None:
    import aiohttp

    base = f"{api_url}/bot{token}"
    offset = None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as s:

        async def call(method: str, **params: Any) -> Any:
            async with s.post(f"{base}/{method}", json=params) as r:
                return (await r.json())["result"]

        while True:
            params: dict[str, Any] = {"timeout": 30, "limit": 100}
            if offset is not None:
                params["offset"] = offset
            batch = await call("getUpdates", **params)
            if not batch:
                continue
            offset = batch[-1]["update_id"] + 1
            await asyncio.gather(*(
                call("sendMessage", chat_id=u["message"]["chat"]["id"], text=u["message"]["text"])
                for u in batch if "message" in u))


def aiogram_bot(api_url: str, token: str) -> None:
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import Message

    dp = Dispatcher()

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "")

    async def main() -> None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
        bot = Bot(token, session=session)
        await dp.start_polling(bot, handle_signals=False, polling_timeout=30)

    asyncio.run(main())


def ptb_bot(api_url: str, token: str, concurrent: bool) -> None:
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(update.message.text or "")

    builder = (ApplicationBuilder().token(token).base_url(f"{api_url}/bot")
               .base_file_url(f"{api_url}/file/bot").connection_pool_size(256))
    if concurrent:
        builder = builder.concurrent_updates(256)
    app = builder.build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.run_polling(poll_interval=0, timeout=30, stop_signals=None)


def main(argv: list[str]) -> None:
    kind, api_url, token = argv
    if kind == "bare":
        asyncio.run(bare(api_url, token))
    elif kind == "aiogram":
        aiogram_bot(api_url, token)
    elif kind == "ptb":
        ptb_bot(api_url, token, concurrent=False)
    elif kind == "ptb-concurrent":
        ptb_bot(api_url, token, concurrent=True)
    else:
        raise SystemExit(f"unknown contender {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
