"""Echo-bot throughput against the emulator, side by side in one run.

    .venv/bin/python benchmarks/throughput.py [--updates 5000] [--chats 200] [--repeat 3]
        [--only bare,aiogram,...] [--concurrency 16] [--inbox-sizes 10000,100000,1000000]
        [--json FILE]

The emulator runs in its own process with flood control off; each contender runs in its own
process. For each run: N text messages from --chats users are queued at the emulator first,
then the contender starts; the clock runs from the first update the emulator hands out to the
N-th sendMessage it receives (sampled every 5 ms from /_emulator/stats). Peak RSS is the
contender's VmHWM. Every loop is bounded: a run gives up after --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
PY = sys.executable
CONTENDERS = ["bare", "antiloop-sqlite", "antiloop-memory", "aiogram", "ptb", "ptb-concurrent"]


@dataclass
class Result:
    name: str
    rates: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    sends: list[int] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    emu_load: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([PY, "-m", "antiloop", "emulator", "--port", "0", "--no-rate-limit"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.strip().rsplit(" ", 1)[-1]
    if not url.startswith("http://127.0.0.1"):
        proc.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc, url


def contender_cmd(name: str, url: str, token: str, tmp: Path, concurrency: int = 16) -> list[str]:
    if name.startswith("antiloop"):
        store = "memory://" if name == "antiloop-memory" else f"sqlite:///{tmp}/bench.db"
        return [PY, "-m", "antiloop", "run", f"{HERE}/bench_bot.py:echo", "--token", token,
                "--api-url", url, "--store", store, "--lock", f"file:{tmp}/.lock",
                "--rate-limit", "off", "--log-level", "WARNING", "--concurrency", str(concurrency)]
    return [PY, str(HERE / "contenders.py"), name, url, token]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def stats(s: aiohttp.ClientSession, url: str, bot_id: int) -> dict[str, Any]:
    async with s.get(f"{url}/_emulator/stats", params={"bot_id": str(bot_id)}) as r:
        data: dict[str, Any] = await r.json()
        return data


async def preload(s: aiohttp.ClientSession, url: str, bot_id: int, n: int, chats: int) -> None:
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem, s.post(f"{url}/_emulator/send", json={
                "bot_id": bot_id, "user_id": 1000 + i % chats, "text": f"message {i}"}) as r:
            if r.status != 200:
                raise SystemExit(f"preload failed: {r.status} {await r.text()}")

    await asyncio.gather(*(one(i) for i in range(n)))


def prefill_inbox(db: Path, bot_id: int, size: int) -> None:
    """``size`` finished entries, as a bot that ran for a day would have retained."""
    subprocess.run([PY, "-c", (
        "import asyncio, sys\n"
        "from antiloop.store.sqlite import SQLiteStore\n"
        f"s = SQLiteStore('sqlite:///{db}')\n"
        "async def m():\n"
        "    await s.open(); await s.close()\n"
        "asyncio.run(m())\n")], check=True)
    now = time.time()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO inbox(bot_id, update_id, state, raw, order_key, attempts, received_at, "
            "finished_at) VALUES(?,?,'done',NULL,?,1,?,?)",
            ((bot_id, 10_000_000 + i, i % 1000, now, now) for i in range(size)))


async def one_run(name: str, url: str, bot_id: int, n: int, chats: int, timeout: float,
                  tmp: Path, inbox_size: int = 0, concurrency: int = 16,
                  emulator_pid: int = 0) -> tuple[float, float, int, float, float]:
    token = f"{bot_id}:bench-{name}-token"
    async with aiohttp.ClientSession() as s:
        await preload(s, url, bot_id, n, chats)
        if inbox_size:
            prefill_inbox(tmp / "bench.db", bot_id, inbox_size)
        proc = subprocess.Popen(contender_cmd(name, url, token, tmp, concurrency),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            t0 = t1 = None
            deadline = time.monotonic() + timeout
            sent = 0
            while time.monotonic() < deadline:
                st = await stats(s, url, bot_id)
                now = time.monotonic()
                if t0 is None and st["updates_delivered"] > 0:
                    t0 = now
                    cpu0, emu0 = cpu_s(proc.pid), cpu_s(emulator_pid)
                sent = int(st["calls"].get("sendMessage", 0))
                if sent >= n:
                    t1 = now
                    bot_cpu, emu_cpu = cpu_s(proc.pid) - cpu0, cpu_s(emulator_pid) - emu0
                    break
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"{name} exited early ({proc.returncode}): {err[-2000:]}")
                await asyncio.sleep(0.005)
            rss = peak_rss_mb(proc.pid)
            await asyncio.sleep(0.3)  # duplicates, if any, arrive now
            sent = int((await stats(s, url, bot_id))["calls"].get("sendMessage", 0))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if t0 is None or t1 is None:
            raise SystemExit(f"{name}: {sent}/{n} replies within {timeout:.0f} s")
        return n / max(t1 - t0, 1e-6), rss, sent, 1e6 * bot_cpu / n, emu_cpu / max(t1 - t0, 1e-6)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    emu, url = start_emulator()
    results: dict[str, Result] = {}
    growth: list[dict[str, Any]] = []
    bot_id = 500_000
    try:
        names = args.only.split(",") if args.only else CONTENDERS
        for rep in range(args.repeat):
            for name in names:
                bot_id += 1
                with tempfile.TemporaryDirectory() as d:
                    rate, rss, sent, us, emu_load = await one_run(
                        name, url, bot_id, args.updates, args.chats, args.timeout, Path(d),
                        concurrency=args.concurrency, emulator_pid=emu.pid)
                r = results.setdefault(name, Result(name))
                r.rates.append(rate)
                r.rss_mb.append(rss)
                r.sends.append(sent)
                r.cpu_us.append(us)
                r.emu_load.append(emu_load)
                print(f"run {rep + 1}/{args.repeat} {name:16s} {rate:8.0f} updates/s  "
                      f"peak RSS {rss:6.1f} MB  sends {sent}  {us:5.0f} µs CPU/update  "
                      f"emulator {emu_load:4.2f} cores", file=sys.stderr, flush=True)
        for size in [int(x) for x in args.inbox_sizes.split(",") if x]:
            rates = []
            for _ in range(args.repeat):
                bot_id += 1
                with tempfile.TemporaryDirectory() as d:
                    rate, _, _, _, _ = await one_run(
                        "antiloop-sqlite", url, bot_id, args.updates, args.chats, args.timeout,
                        Path(d), inbox_size=size, concurrency=args.concurrency,
                        emulator_pid=emu.pid)
                rates.append(rate)
            growth.append({"retained": size, "updates_per_s": statistics.median(rates)})
            print(f"inbox {size:>9,d} retained: {statistics.median(rates):8.0f} updates/s",
                  file=sys.stderr, flush=True)
    finally:
        emu.send_signal(signal.SIGINT)
        emu.wait(10)
    return {
        "updates": args.updates, "chats": args.chats, "repeat": args.repeat,
        "concurrency": args.concurrency,
        "cores": os.cpu_count(),
        "results": {k: {"updates_per_s": round(v.rate), "runs": [round(x) for x in v.rates],
                        "peak_rss_mb": round(max(v.rss_mb), 1), "sends": v.sends,
                        "cpu_us_per_update": round(statistics.median(v.cpu_us)),
                        "emulator_cores": round(statistics.median(v.emu_load), 2)}
                    for k, v in results.items()},
        "inbox_growth": growth,
    }


def table(out: dict[str, Any]) -> str:
    res = out["results"]
    base = {k: res[k]["updates_per_s"] for k in res}
    lines = ["| contender | updates/s (median) | runs | peak RSS MB | CPU µs/update | "
             "emulator cores | replies sent |", "|---|---:|---|---:|---:|---:|---|"]
    for k, v in res.items():
        lines.append(f"| {k} | {v['updates_per_s']} | {', '.join(map(str, v['runs']))} | "
                     f"{v['peak_rss_mb']} | {v['cpu_us_per_update']} | {v['emulator_cores']} | "
                     f"{', '.join(map(str, v['sends']))} |")
    ours = base.get("antiloop-sqlite")
    if ours:
        lines.append("")
        for other in ("aiogram", "ptb", "ptb-concurrent", "bare", "antiloop-memory"):
            if base.get(other):
                lines.append(f"- antiloop-sqlite / {other}: {ours / base[other]:.2f}×")
    if out["inbox_growth"]:
        lines += ["", "| retained finished entries | updates/s |", "|---:|---:|"]
        lines += [f"| {g['retained']:,} | {round(g['updates_per_s'])} |" for g in out["inbox_growth"]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--updates", type=int, default=5000)
    p.add_argument("--chats", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="")
    p.add_argument("--concurrency", type=int, default=16,
                   help="antiloop's --concurrency (default 16, antiloop's own default)")
    p.add_argument("--inbox-sizes", default="")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--json", default="")
    args = p.parse_args()
    out = asyncio.run(main_async(args))
    print(table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
