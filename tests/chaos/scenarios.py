"""Chaos scenarios against real `antiloop run` processes and the in-process emulator.

Each scenario is an async function returning a :class:`Result` whose figures come from the
emulator's transcripts and counters. ``tests/chaos/test_chaos.py`` runs them short and asserts
the promises; ``benchmarks/soak.py`` runs them at length and prints the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from antiloop.demo import DemoEmulator
from antiloop.testing import Emulator
from tests.conftest import PYTHON, ROOT, subprocess_env
from tests.integration.harness import Fleet, wait_until

BOT = 888_001
TARGET = f"{ROOT / 'tests' / 'chaos' / 'bots.py'}:router"


@dataclass
class Result:
    name: str
    load: str
    faults: str
    updates: int = 0
    lost: int = 0
    duplicate_replies: int = 0
    answered_twice: int = 0
    takeovers: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        take = (f"{max(self.takeovers):.2f} s max, {sum(self.takeovers) / len(self.takeovers):.2f}"
                f" s mean ({len(self.takeovers)})" if self.takeovers else "-")
        return {"scenario": self.name, "load": self.load, "faults": self.faults,
                "updates": self.updates, "lost": self.lost,
                "duplicate_replies": self.duplicate_replies,
                "answered_twice": self.answered_twice, "takeover": take, **self.extra}


# ---------------------------------------------------------------------------- helpers


class ChaosFleet(Fleet):
    """The integration Fleet on the chaos bot, plus processes whose output goes to a pipe (a
    file-size limit must not stop the log that reports it)."""

    def __init__(self, tmp: Path, tg: Emulator, *extra: str) -> None:
        super().__init__(tmp, tg.base_url, Emulator.token_for(BOT), TARGET, *extra)
        self.piped: dict[int, list[str]] = {}

    def start_piped(self, *more: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [PYTHON, "-m", "antiloop", "run", self.target, *self.args(
                "--rate-limit", "off", "--poll-timeout", "1", *self.extra, *more)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.tmp, env=subprocess_env())
        lines: list[str] = []
        self.piped[proc.pid] = lines

        def drain() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.append(raw.decode(errors="replace"))

        threading.Thread(target=drain, daemon=True).start()
        self.procs.append(proc)
        return proc

    def piped_output(self, pid: int) -> str:
        return "".join(self.piped.get(pid, []))

    def holder(self) -> dict[str, Any] | None:
        try:
            raw = Path(self.lock[len("file:"):]).read_text()
            data = json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def live_409(tg: DemoEmulator) -> int:
    return int(tg.stats(BOT)["conflicts_409"]) - tg.dead_409


def reply_counts(tg: Emulator, chats: set[int]) -> Counter[tuple[int, str]]:
    out: Counter[tuple[int, str]] = Counter()
    for chat in chats:
        for m in tg.messages(chat, bot_id=BOT):
            if m["from_bot"] and not m["deleted"] and m["text"] is not None:
                out[(chat, str(m["text"]))] += 1
    return out


def check_echoes(tg: Emulator, sent: list[tuple[int, str]]) -> tuple[int, int]:
    """(lost, duplicates) of the ``echo: T`` replies to the unique texts ``sent``."""
    counts = reply_counts(tg, {c for c, _ in sent})
    lost = sum(1 for c, t in sent if counts[(c, f"echo: {t}")] == 0)
    dup = sum(max(0, counts[(c, f"echo: {t}")] - 1) for c, t in sent)
    return lost, dup


async def all_echoed(tg: Emulator, sent: list[tuple[int, str]], timeout: float) -> None:
    """Wait (bounded) until every sent text has its reply; then a little longer, so a
    duplicate would show."""
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: check_echoes(tg, sent)[0] == 0, timeout=timeout,
                         what="every message answered")
    await asyncio.sleep(0.5)


async def with_fleet(tg: Emulator, tmp: Path, body: Callable[[ChaosFleet], Awaitable[Result]],
                     *extra: str) -> Result:
    f = ChaosFleet(tmp, tg, *extra)
    try:
        return await body(f)
    finally:
        f.stop_all()


def _fresh(tmp: Path, name: str) -> Path:
    path = tmp / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------------------- scenarios


async def competing_start(tmp: Path, *, procs: int = 5, users: int = 20,
                          rounds: int = 5) -> Result:
    """``procs`` copies started in the same instant: exactly one polls; each update once."""
    tmp = _fresh(tmp, "competing")
    async with DemoEmulator(rate_limits=False) as tg:
        async def body(f: ChaosFleet) -> Result:
            f.start(procs)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            sent: list[tuple[int, str]] = []
            for r in range(rounds):
                for u in range(1, users + 1):
                    text = f"c{r}-{u}"
                    await tg.send(BOT, u, text)
                    sent.append((u, text))
            await all_echoed(tg, sent, 60)
            lost, dup = check_echoes(tg, sent)
            stats = tg.stats(BOT)
            waiting = sum(1 for i in range(procs) if "Waiting as a hot standby" in f.output(i))
            status = await asyncio.to_thread(f.status)
            return Result("competing start", f"{procs} processes started at once, {len(sent)} "
                          f"messages from {users} users", "none", len(sent), lost, dup,
                          int(stats["callbacks"]["answered_twice"]), extra={
                              "conflicts_409": live_409(tg),
                              "pollers_max": int(stats["getupdates_pollers_max"]),
                              "standbys": waiting,
                              "status_holder": (status["lock"]["holder"] or {}).get("pid"),
                              "holder": f.holder_pid()})
        return await with_fleet(tg, tmp, body)


async def kill_loop(tmp: Path, *, seconds: float = 10.0, kill_every: float = 2.5,
                    rate: float = 40.0, users: int = 10) -> Result:
    """Steady load; the lock holder is SIGKILLed every ``kill_every`` s and replaced."""
    tmp = _fresh(tmp, "killloop")
    async with DemoEmulator(rate_limits=False) as tg:
        async def body(f: ChaosFleet) -> Result:
            f.start(3)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            sent: list[tuple[int, str]] = []
            takeovers: list[float] = []
            stop = asyncio.Event()

            async def sender() -> None:
                i = 0
                loop = asyncio.get_running_loop()
                start = loop.time()
                while not stop.is_set() and loop.time() - start < seconds:
                    u = 1 + i % users
                    text = f"k{i}"
                    await tg.send(BOT, u, text)
                    sent.append((u, text))
                    i += 1
                    await asyncio.sleep(1.0 / rate)

            async def killer() -> None:
                loop = asyncio.get_running_loop()
                start = loop.time()
                while loop.time() - start < seconds - 1.0:
                    await asyncio.sleep(kill_every)
                    pid = f.holder_pid()
                    if pid is None:
                        continue
                    t_kill = time.time()
                    await asyncio.to_thread(f.kill, pid)
                    f.start(1)

                    def replaced(pid: int = pid) -> bool:
                        h = f.holder()
                        return h is not None and int(h["pid"]) != pid

                    await wait_until(replaced, timeout=30, what="a new holder")
                    h = f.holder()
                    assert h is not None
                    takeovers.append(max(0.0, float(h["since_ts"]) - t_kill))

            try:
                await asyncio.gather(sender(), killer())
            finally:
                stop.set()
            await all_echoed(tg, sent, 60)
            lost, dup = check_echoes(tg, sent)
            stats = tg.stats(BOT)
            return Result("holder SIGKILLed under load",
                          f"{rate:.0f} msg/s for {seconds:.0f} s, {users} users, 3 processes",
                          f"SIGKILL of the holder every {kill_every:g} s ({len(takeovers)} kills)",
                          len(sent), lost, dup, int(stats["callbacks"]["answered_twice"]),
                          takeovers, {"conflicts_409": live_409(tg)})
        return await with_fleet(tg, tmp, body)


async def sigstop(tmp: Path, *, stop_s: float = 6.5, during: int = 20) -> Result:
    """The holder is SIGSTOPped past its heartbeat, then SIGCONTed."""
    tmp = _fresh(tmp, "sigstop")
    async with DemoEmulator(rate_limits=False) as tg:
        async def body(f: ChaosFleet) -> Result:
            f.start(2)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            sent = [(1 + i % 5, f"before{i}") for i in range(10)]
            for u, t in sent:
                await tg.send(BOT, u, t)
            await all_echoed(tg, sent, 30)
            pid = f.holder_pid()
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(0.3)
                polls_at_stop = int(tg.stats(BOT)["calls"].get("getUpdates", 0))
                replies_at_stop = sum(reply_counts(tg, set(range(1, 6))).values())
                later = [(1 + i % 5, f"stopped{i}") for i in range(during)]
                for u, t in later:
                    await tg.send(BOT, u, t)
                await asyncio.sleep(stop_s)
                status = await asyncio.to_thread(f.status)
                polls_while_stopped = int(tg.stats(BOT)["calls"].get("getUpdates", 0)) - polls_at_stop
                replies_while_stopped = sum(reply_counts(tg, set(range(1, 6))).values()) - replies_at_stop
            finally:
                os.kill(pid, signal.SIGCONT)
            t_cont = time.monotonic()
            await all_echoed(tg, sent + later, 30)
            resumed = time.monotonic() - t_cont
            lost, dup = check_echoes(tg, sent + later)
            holder = status["lock"]["holder"] or {}
            return Result("holder SIGSTOPped", f"{len(sent) + len(later)} messages, 2 processes",
                          f"SIGSTOP of the holder for {stop_s:g} s, then SIGCONT",
                          len(sent) + len(later), lost, dup,
                          int(tg.stats(BOT)["callbacks"]["answered_twice"]), extra={
                              "polls_while_stopped": polls_while_stopped,
                              "replies_while_stopped": replies_while_stopped,
                              "lock_state": status["lock"]["state"],
                              "status_pid": holder.get("pid"), "stopped_pid": pid,
                              "heartbeat_age_s": holder.get("heartbeat_age_s"),
                              "holder_after": f.holder_pid(),
                              "resumed_in_s": round(resumed, 2),
                              "conflicts_409": live_409(tg)})
        return await with_fleet(tg, tmp, body)


def chattr(flag: str, *paths: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    ok = True
    for p in paths:
        if p.exists():
            res = subprocess.run(["chattr", flag, str(p)], capture_output=True, text=True)
            ok = ok and res.returncode == 0
    return ok


async def store_unwritable(tmp: Path, *, how: str, during: int = 10, hold_s: float = 2.0,
                           under_load: bool = False) -> Result:
    """The database becomes unwritable mid-run (``how``: ``readonly`` = ``chattr +i`` on the db
    and its -wal, which stops even root; ``full`` = RLIMIT_FSIZE lowered with ``prlimit``), then
    writable again."""
    tmp = _fresh(tmp, f"store-{how}")
    async with DemoEmulator(rate_limits=False) as tg:
        async def body(f: ChaosFleet) -> Result:
            proc = f.start_piped()
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            sent = [(1 + i % 5, f"ok{i}") for i in range(10)]
            for u, t in sent:
                await tg.send(BOT, u, t)
            await all_echoed(tg, sent, 30)
            db = Path(f.store[len("sqlite:///"):])
            files = [db, Path(f"{db}-wal")]
            stream: list[tuple[int, str]] = []
            streaming = asyncio.Event()

            async def stream_sender() -> None:  # handlers are running when the store breaks
                i = 0
                while under_load and not streaming.is_set() and i < 2000:
                    u = 1 + i % 5
                    await tg.send(BOT, u, f"slow s{i}")
                    stream.append((u, f"slow s{i}"))
                    i += 1
                    await asyncio.sleep(0.02)

            stream_task = asyncio.create_task(stream_sender())
            await asyncio.sleep(0.5 if under_load else 0)
            if how == "readonly":
                if not chattr("+i", *files):
                    chattr("-i", *files)
                    raise RuntimeError("chattr +i is not supported here")
            else:
                subprocess.run(["prlimit", "--pid", str(proc.pid), "--fsize=4096:unlimited"],
                               check=True)
            try:
                later = [(1 + i % 5, f"{how}{i}") for i in range(during)]
                for u, t in later:
                    await tg.send(BOT, u, t)
                with contextlib.suppress(AssertionError):
                    await wait_until(lambda: str(db.resolve()) in f.piped_output(proc.pid)
                                     and "unconfirmed" in f.piped_output(proc.pid), timeout=20,
                                     what="the store error in the log")
                await asyncio.sleep(hold_s)
                pending = int(tg.stats(BOT)["updates_pending"])
                replied_while_broken = len(later) - check_echoes(tg, later)[0]
            finally:
                if how == "readonly":
                    chattr("-i", *files)
                else:
                    subprocess.run(["prlimit", "--pid", str(proc.pid), "--fsize=unlimited"],
                                   check=True)
                await asyncio.sleep(0.5 if under_load else 0)
                streaming.set()
                await stream_task
            later += stream
            await all_echoed(tg, sent + later, 40)
            lost, dup = check_echoes(tg, sent + later)
            out = f.piped_output(proc.pid)
            error_lines = [ln.strip() for ln in out.splitlines()
                           if "unconfirmed" in ln and str(db.resolve()) in ln]
            status = await asyncio.to_thread(f.status)
            return Result(
                "database read-only" if how == "readonly" else "disk full (RLIMIT_FSIZE)",
                f"{len(sent) + len(later)} messages, 1 process"
                + (", a stream of 50 msg/s while it breaks" if under_load else ""),
                "chattr +i on the db and -wal" if how == "readonly" else
                "prlimit --fsize=4096 on the running holder", len(sent) + len(later), lost, dup,
                int(tg.stats(BOT)["callbacks"]["answered_twice"]), extra={
                    "pending_at_telegram_while_broken": pending,
                    "replied_while_broken": replied_while_broken,
                    "error_line": error_lines[0][:300] if error_lines else "",
                    "traceback": "Traceback" in out,
                    "handler_failures": out.count("failed (attempt"),
                    "alive": proc.poll() is None,
                    "dead_letters": status["inbox"]["dead"]})
        return await with_fleet(tg, tmp, body)


async def press_storm(tmp: Path, *, users: int = 10, rounds: int = 3,
                      redeliver: float = 0.3, seed: int = 5) -> Result:
    """Redelivered batches while people press each button two or three times."""
    tmp = _fresh(tmp, "presses")
    rng = random.Random(seed)
    async with DemoEmulator(rate_limits=False) as tg:
        tg.set_faults(redeliver=redeliver, seed=seed)

        async def body(f: ChaosFleet) -> Result:
            f.start(2)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            texts: list[tuple[int, str]] = []
            bursts: list[tuple[int, str]] = []  # (chat, "picked r:x") expected once
            presses = 0

            async def person(u: int) -> None:
                nonlocal presses
                for r in range(rounds):
                    await tg.send(BOT, u, f"/menu {r}")

                    def menus(r: int = r, u: int = u) -> list[dict[str, Any]]:
                        return [m for m in tg.messages(u, bot_id=BOT)
                                if m["from_bot"] and m["text"] == f"menu {r}"]

                    await wait_until(lambda: bool(menus()), timeout=20, what="the menu")
                    menu = menus()[0]
                    choice = rng.choice("ab")
                    for _ in range(rng.choice([2, 3])):
                        await tg.click(BOT, u, menu["message_id"], f"pick:{r}:{choice}")
                        presses += 1
                        await asyncio.sleep(rng.uniform(0.02, 0.12))
                    bursts.append((u, f"picked {r}:{choice}"))
                    text = f"t{r}-{u}"
                    await tg.send(BOT, u, text)
                    texts.append((u, text))
                    await wait_until(lambda t=text: reply_counts(tg, {u})[(u, f"echo: {t}")] > 0,
                                     timeout=20, what="the echo")

            await asyncio.gather(*(person(u) for u in range(1, users + 1)))
            await all_echoed(tg, texts, 20)
            await asyncio.sleep(1.0)
            lost, dup = check_echoes(tg, texts)
            counts = reply_counts(tg, set(range(1, users + 1)))
            picked_lost = sum(1 for b in bursts if counts[b] == 0)
            picked_dup = sum(max(0, counts[b] - 1) for b in bursts)
            menus_dup = sum(max(0, n - 1) for (_, t), n in counts.items() if t.startswith("menu"))
            stats = tg.stats(BOT)
            cb = stats["callbacks"]
            return Result("press storm + redelivery", f"{users} users x {rounds} rounds: /menu, "
                          f"2-3 presses of one button, a text ({presses} presses)",
                          f"redeliver {redeliver}", int(stats["updates_created"]),
                          lost + picked_lost + int(cb["unanswered"]), dup + picked_dup + menus_dup,
                          int(cb["answered_twice"]), extra={
                              "presses": presses, "answered": int(cb["answered"]),
                              "unanswered": int(cb["unanswered"]),
                              "redelivered": int(stats["updates_redelivered"]),
                              "handler_runs_for_bursts": sum(counts[b] for b in bursts),
                              "bursts": len(bursts)})
        return await with_fleet(tg, tmp, body)


async def flood_storm(tmp: Path, *, users: int = 5, per_user: int = 6) -> Result:
    """Telegram-like flood limits ON at the emulator, proactive limits OFF in antiloop: a burst
    per chat draws 429s, which the outbox must wait out (retry_after) without losing a reply."""
    tmp = _fresh(tmp, "flood")
    async with DemoEmulator(rate_limits=True) as tg:
        async def body(f: ChaosFleet) -> Result:
            f.start(1)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            sent = [(u, f"f{i}-{u}") for i in range(per_user) for u in range(1, users + 1)]
            for u, t in sent:
                await tg.send(BOT, u, t)
            await all_echoed(tg, sent, 90)
            lost, dup = check_echoes(tg, sent)
            stats = tg.stats(BOT)
            order_ok = all(
                [m["text"] for m in tg.messages(u, bot_id=BOT) if m["from_bot"]]
                == [f"echo: f{i}-{u}" for i in range(per_user)] for u in range(1, users + 1))
            return Result("429 storm", f"{len(sent)} messages at once, {per_user} per chat",
                          "emulator flood limits on, `--rate-limit off`", len(sent), lost, dup,
                          int(stats["callbacks"]["answered_twice"]), extra={
                              "rate_limited_429": int(stats["rate_limited_429"]),
                              "in_order": order_ok})
        return await with_fleet(tg, tmp, body)


async def drop_after_send(tmp: Path, *, users: int = 5, per_user: int = 8, p: float = 0.25,
                          seed: int = 3) -> Result:
    """Sends that Telegram performed but answered with 500 (the client cannot tell they went
    out): the handler fails, the update is retried and the message is sent again."""
    tmp = _fresh(tmp, "drop")
    async with DemoEmulator(rate_limits=False) as tg:
        tg.set_faults(drop_after_send=p, seed=seed)

        async def body(f: ChaosFleet) -> Result:
            f.start(1)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            sent = [(u, f"d{i}-{u}") for i in range(per_user) for u in range(1, users + 1)]
            for u, t in sent:
                await tg.send(BOT, u, t)
                await asyncio.sleep(0.01)
            await all_echoed(tg, sent, 40)
            await asyncio.sleep(1.0)
            lost, dup = check_echoes(tg, sent)
            stats = tg.stats(BOT)
            status = await asyncio.to_thread(f.status)
            return Result("drop_after_send", f"{len(sent)} messages, {users} users",
                          f"drop_after_send {p}", len(sent), lost, dup,
                          int(stats["callbacks"]["answered_twice"]), extra={
                              "sends_dropped": int(stats["sends_dropped"]),
                              "repeat_reply_suppressed": status["suppressed"].get(
                                  "repeat_reply", 0),
                              "dead_letters": status["inbox"]["dead"]})
        return await with_fleet(tg, tmp, body)


async def drop_after_edit(tmp: Path, *, users: int = 4, p: float = 1.0, seed: int = 3) -> Result:
    """A press whose edit Telegram performed and answered with 500: the retry edits again."""
    tmp = _fresh(tmp, "dropedit")
    async with DemoEmulator(rate_limits=False) as tg:
        async def body(f: ChaosFleet) -> Result:
            f.start(1)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            menus = []
            for u in range(1, users + 1):
                await tg.send(BOT, u, "/menu 1")
                (menu,) = await tg.wait_for_messages(u, 1, bot_id=BOT, within=20)
                menus.append((u, menu["message_id"]))
            tg.set_faults(drop_after_send=p, seed=seed)
            for u, mid in menus:
                await tg.click(BOT, u, mid, "edit:1")
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: all(
                    m["text"] == "edited 1" for u, mid in menus
                    for m in tg.messages(u, bot_id=BOT) if m["message_id"] == mid), timeout=20,
                    what="the edits")
            tg.set_faults()
            await asyncio.sleep(4.0)  # the retries (backoff 0.5, 1 s) run meanwhile
            stats = tg.stats(BOT)
            status = await asyncio.to_thread(f.status)
            edited = sum(1 for u, mid in menus for m in tg.messages(u, bot_id=BOT)
                         if m["message_id"] == mid and m["text"] == "edited 1")
            return Result("drop_after_send on an edit", f"{users} presses editing their menu",
                          f"drop_after_send {p} on the edit", users, users - edited, 0,
                          int(stats["callbacks"]["answered_twice"]), extra={
                              "edit_calls": int(stats["calls"].get("editMessageText", 0)),
                              "unanswered": int(stats["callbacks"]["unanswered"]),
                              "dead_letters": status["inbox"]["dead"],
                              "dead_errors": sorted({d["error"][:80]
                                                     for d in status["dead_letters"]})})
        return await with_fleet(tg, tmp, body, "--max-attempts", "3")


async def kill_mid_send(tmp: Path, *, messages: int = 3, latency_ms: float = 1500.0) -> Result:
    """The holder is SIGKILLed while its sendMessage is on the way (the emulator holds every
    request ``latency_ms`` before performing it, so the kill lands before Telegram got it)."""
    tmp = _fresh(tmp, "midsend")
    async with DemoEmulator(rate_limits=False) as tg:
        async def body(f: ChaosFleet) -> Result:
            f.start(2)
            await wait_until(lambda: f.holder_pid() is not None, what="a lock holder")
            first = f.holder_pid()
            assert first is not None
            tg.set_faults(latency_ms=latency_ms)
            sent = [(u, f"mid{u}") for u in range(1, messages + 1)]
            for u, t in sent:
                await tg.send(BOT, u, t)
            await asyncio.sleep(latency_ms / 1000 / 2 + 0.3)  # delivered, handled, sending
            performed_before_kill = int(tg.stats(BOT)["messages_sent"])
            await asyncio.to_thread(f.kill, first)
            tg.set_faults()
            await wait_until(lambda: f.holder_pid() not in (None, first), timeout=30,
                             what="a new holder")
            await all_echoed(tg, sent, 10)
            lost, dup = check_echoes(tg, sent)
            status = await asyncio.to_thread(f.status)
            return Result("SIGKILL mid-send", f"{messages} messages",
                          f"latency {latency_ms:g} ms, SIGKILL of the holder mid-send",
                          messages, lost, dup, 0, extra={
                              "performed_before_kill": performed_before_kill,
                              "repeat_reply_suppressed": status["suppressed"].get(
                                  "repeat_reply", 0)})
        return await with_fleet(tg, tmp, body)
