"""The antiloop echo bot of the throughput benchmark: `antiloop run benchmarks/bench_bot.py:echo`."""

from antiloop import Context


async def echo(ctx: Context) -> None:
    await ctx.reply(ctx.text or "")
