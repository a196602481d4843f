"""``antiloop demo``: one storm, twice: a bot as bots usually run, then the same bot under antiloop.

Everything runs on this machine, on 127.0.0.1, in a fresh temporary directory: the Bot API
emulator (in this process), three copies of the example menu bot (subprocesses), simulated
people who press buttons two or three times and repeat themselves, a ``redeliver`` fault, and a
SIGKILL halfway through. Every figure of the report is read from the emulator's transcripts and
counters, never from what the bot believes it did:

``updates_sent``       updates the emulator created (user messages and button presses).
``deliveries``         updates handed out by getUpdates, redeliveries and copies included.
``handler_runs``       message-sending/editing calls the bot made at the emulator
                       (sendMessage, editMessageText, ...; refused ones included).
``duplicate_replies``  bot messages a person saw twice: within the answer to one action (a burst
                       of identical messages, or of presses of one button), a new bot message
                       whose text equals an earlier one of the same answer.
``spinning``           button presses never answered (the client's spinner), after a grace time.
``answered_twice``     callback queries answered a second time (Telegram refuses it with 400).
``conflicts_409``      getUpdates answered 409 to a live client (the emulator also answers 409 to
                       a killed process's abandoned request; those are counted apart).
``lost``               user messages of a burst that got no bot message at all, plus presses
                       never answered.
``takeover_s``         SIGKILL of the lock holder -> the next holder took the lock (``since_ts`` in
                       the lock file).

The hidden subcommand ``antiloop demo _naive --api-url URL --token T --bot FILE:router`` is the
"as usually run" loop: a framework-style poller (getUpdates, advance the offset, queue the
batch, poll again) that calls the bot's own handler functions directly: no lock, no inbox, no
ledger, no debounce, no repeat-reply window, no 429 handling. It answers a press after its
handler when the handler did not (as tutorials do with ``query.answer()``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web

import antiloop

from .botapi import BotAPI
from .context import Context
from .errors import AntiloopError, Conflict, TelegramError
from .outbox import Outbox
from .store.memory import MemoryStore
from .testing.emulator import Emulator
from .testing.methods import FLOOD_METHODS

log = logging.getLogger("antiloop.demo")

BOT_ID = 700_000_001
COPIES = 3
REDELIVER = 0.15
DEFAULT_USERS = 16
DEFAULT_ACTIONS = 10
RESPONSE_WAIT_S = 8.0
"""How long a simulated person waits for any answer before the next action (lost ones pay it)."""
SETTLE_S = 0.35
"""After the first answer to an action, a person watches this long without changes before
acting again (so the duplicates of one action are seen as part of its answer)."""
START_SPACING_S = 4.5
"""Two separate /start actions of one person are at least this far apart (more than antiloop's
3 s repeat-reply window, which would otherwise fold the second menu into the first on purpose)."""
GRACE_S = 2.0


def default_bot() -> str:
    return str(Path(antiloop.__file__).resolve().parents[2] / "examples" / "menu_bot.py") + ":router"


# ---------------------------------------------------------------------------- the emulator


class DemoEmulator(Emulator):
    """The emulator, counting 409s answered to a client that is gone (a SIGKILLed holder's
    parked getUpdates is still answered 409 when the next poller arrives: nobody receives it)."""

    dead_409 = 0
    last_batch_port: int | None = None
    """The client port of the latest getUpdates that returned updates (who is doing the work)."""

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        response = await super()._handle_api(request)
        if response.status == 409 and request.transport is None:
            self.dead_409 += 1
        elif (response.status == 200 and request.match_info.get("method") == "getUpdates"
              and isinstance(response, web.Response) and isinstance(response.body, bytes)
              and b'"result": []' not in response.body and peer is not None):
            self.last_batch_port = int(peer[1])
        return response


def pid_of_client_port(port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` owns the TCP socket with local port ``port`` (Linux /proc), if any."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return pid
    return None


# ---------------------------------------------------------------------------- the storm


@dataclass
class Action:
    kind: str  # "text" or "press"
    chat: int
    payload: str
    copies: int
    sent: int = 0
    callback_ids: list[str] = field(default_factory=list)
    new_texts: list[str] = field(default_factory=list)
    answered: bool = False


@dataclass
class Figures:
    updates_sent: int = 0
    deliveries: int = 0
    handler_runs: int = 0
    duplicate_replies: int = 0
    spinning: int = 0
    answered_twice: int = 0
    conflicts_409: int = 0
    lost: int = 0
    takeover_s: float | None = None


@dataclass
class SideReport:
    figures: Figures
    killed_pid: int | None
    dead_409: int
    actions: int
    seconds: float


class Progress:
    """A live line on a TTY (rewritten with \\r), periodic plain lines otherwise."""

    def __init__(self, stream: IO[str], quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self._last = 0.0
        self._width = 0

    def show(self, text: str, *, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
            self.stream.flush()
        elif force or now - self._last >= 2.0:
            self._last = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()


class Person:
    """One simulated user in a private chat: acts, waits for an answer, acts again."""

    def __init__(self, tg: Emulator, user_id: int, rng: random.Random, actions: int) -> None:
        self.tg = tg
        self.user_id = user_id
        self.rng = rng
        self.planned = actions
        self.done: list[Action] = []
        self.last_start = -1e9

    def _bot_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.tg.messages(self.user_id, bot_id=BOT_ID) if m["from_bot"]]

    def _menu(self) -> tuple[int, list[str]] | None:
        for m in reversed(self._bot_messages()):
            markup = m.get("reply_markup") or {}
            datas = [b["callback_data"] for row in markup.get("inline_keyboard", [])
                     for b in row if isinstance(b, dict) and "callback_data" in b]
            if datas and not m["deleted"]:
                return int(m["message_id"]), datas
        return None

    def _signature(self, action: Action) -> tuple[int, int, int]:
        msgs = self._bot_messages()
        answered = sum(1 for q in action.callback_ids
                       if self.tg.callback_answer(q, bot_id=BOT_ID) is not None)
        return len(msgs), sum(int(m["edits"]) for m in msgs), answered

    async def run(self, on_done: Any) -> None:
        for _ in range(self.planned):
            action = await self._act()
            self.done.append(action)
            on_done()
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    async def _act(self) -> Action:
        loop = asyncio.get_running_loop()
        menu = self._menu()
        want_start = menu is None or self.rng.random() < 0.12
        if want_start and loop.time() - self.last_start < START_SPACING_S and menu is not None:
            want_start = False
        copies = self.rng.choice([1, 2, 2, 3, 3])
        if want_start:
            wait = START_SPACING_S - (loop.time() - self.last_start)
            if wait > 0:
                await asyncio.sleep(wait)
            action = Action("text", self.user_id, "/start", copies)
        else:
            assert menu is not None
            message_id, datas = menu
            action = Action("press", self.user_id, self.rng.choice(datas), copies)
        before_ids = {int(m["message_id"]) for m in self._bot_messages()}
        base = self._signature(action)
        for i in range(action.copies):
            try:
                if action.kind == "text":
                    await self.tg.send(BOT_ID, self.user_id, action.payload)
                else:
                    got = await self.tg.click(BOT_ID, self.user_id, message_id, action.payload)
                    action.callback_ids.append(str(got["callback_query_id"]))
                action.sent += 1
            except ValueError:  # the button is gone (the message was edited meanwhile)
                break
            if i + 1 < action.copies:
                await asyncio.sleep(self.rng.uniform(0.02, 0.15))
        if action.kind == "text":
            self.last_start = loop.time()
        # Wait for a first answer, then until nothing changed for SETTLE_S.
        deadline = loop.time() + RESPONSE_WAIT_S
        sig = base
        while loop.time() < deadline and action.sent:
            await asyncio.sleep(0.05)
            sig = self._signature(action)
            if sig != base:
                break
        quiet_since = loop.time()
        settle_end = loop.time() + 3.0
        while sig != base and loop.time() < settle_end:
            await asyncio.sleep(0.05)
            now_sig = self._signature(action)
            if now_sig != sig:
                sig, quiet_since = now_sig, loop.time()
            elif loop.time() - quiet_since >= SETTLE_S:
                break
        if action.kind == "text":
            self.last_start = loop.time()
        action.new_texts = [str(m["text"]) for m in self._bot_messages()
                            if int(m["message_id"]) not in before_ids]
        return action


def measure(tg: DemoEmulator, people: list[Person]) -> Figures:
    stats = tg.stats(BOT_ID)
    calls: dict[str, int] = stats["calls"]
    f = Figures()
    f.updates_sent = int(stats["updates_created"])
    f.deliveries = int(stats["updates_delivered"])
    f.handler_runs = sum(int(calls.get(m, 0)) for m in FLOOD_METHODS)
    f.spinning = int(stats["callbacks"]["unanswered"])
    f.answered_twice = int(stats["callbacks"]["answered_twice"])
    f.conflicts_409 = max(0, int(stats["conflicts_409"]) - tg.dead_409)
    lost_texts = 0
    dup = 0
    for person in people:
        for action in person.done:
            counts = Counter(action.new_texts)
            dup += sum(n - 1 for n in counts.values())
            if action.kind == "text" and action.sent and not action.new_texts:
                lost_texts += action.sent
    f.duplicate_replies = dup
    f.lost = lost_texts + f.spinning
    return f


# ---------------------------------------------------------------------------- the processes


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TELEGRAM_BOT_TOKEN", None)
    env.pop("TELEGRAM_API_URL", None)
    src = str(Path(antiloop.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Copies:
    """Subprocesses of one side; every one is killed in :meth:`stop`."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{self.name}-{len(self.procs)}.log", "wb")
        self._logs.append(out)
        proc = subprocess.Popen([sys.executable, "-m", "antiloop", *argv], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.workdir, env=_env())
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for p in self.alive():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for out in self._logs:
            out.close()


def _holder(lock_path: Path) -> dict[str, Any] | None:
    try:
        raw = lock_path.read_text()
        data = json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


async def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AntiloopError(f"demo: timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def run_side(side: str, args: argparse.Namespace, workdir: Path,
                   progress: Progress) -> SideReport:
    started = time.monotonic()
    token = Emulator.token_for(BOT_ID)
    rate = args.rate_limits == "on"
    tg = DemoEmulator(rate_limits=rate)
    tg.set_faults(redeliver=REDELIVER, seed=args.seed)
    copies = Copies(workdir, side)
    killed: int | None = None
    takeover: float | None = None
    people: list[Person] = []
    async with tg:
        try:
            lock = workdir / ".bot_instance.lock"
            for _ in range(COPIES):
                if side == "naive":
                    copies.start(["demo", "_naive", "--api-url", tg.base_url, "--token", token,
                                  "--bot", args.bot])
                else:
                    copies.start(["run", args.bot, "--token", token, "--api-url", tg.base_url,
                                  "--store", f"sqlite:///{workdir}/bot_status.db",
                                  "--lock", f"file:{lock}", "--poll-timeout", "10",
                                  "--rate-limit", args.rate_limits, "--log-level", "INFO"])

            def ready() -> bool:
                if any(p.poll() is not None for p in copies.procs):
                    raise AntiloopError(f"demo: a {side} copy exited early; see "
                                        f"{workdir}/{side}-*.log")
                return int(tg.stats(BOT_ID)["calls"].get("getUpdates", 0)) >= (
                    COPIES if side == "naive" else 1)

            await _wait(ready, 30.0, f"the {side} copies to start polling")
            people = [Person(tg, 1000 + i, random.Random(f"{args.seed}:{i}"), args.actions)
                      for i in range(args.users)]
            total = args.users * args.actions
            done = 0
            kill_at = total // 2
            kill_now = asyncio.Event()
            label = "as usually run" if side == "naive" else "under antiloop"

            def on_done() -> None:
                nonlocal done
                done += 1
                if done >= kill_at:
                    kill_now.set()
                s = tg.stats(BOT_ID)
                progress.show(f"[{label}] {done}/{total} actions, {s['updates_created']} updates, "
                              f"{s['updates_delivered']} deliveries, {len(copies.alive())} "
                              f"copies alive")

            async def killer() -> None:
                nonlocal killed, takeover
                await kill_now.wait()
                if side == "naive":
                    # The copy doing the work: the one that got the latest batch of updates.
                    alive = [p.pid for p in copies.alive()]
                    port = tg.last_batch_port
                    pid = pid_of_client_port(port, alive) if port is not None else None
                    killed = pid if pid is not None else alive[0]
                    os.kill(killed, signal.SIGKILL)
                    progress.line(f"  [{label}] halfway: SIGKILL to copy pid {killed}, the one "
                                  "that got the latest batch")
                    return
                holder = _holder(lock)
                if holder is None:
                    return
                killed = int(holder["pid"])
                t_kill = time.time()
                os.kill(killed, signal.SIGKILL)
                progress.line(f"  [{label}] halfway: SIGKILL to the lock holder pid {killed}")

                def new_holder() -> bool:
                    h = _holder(lock)
                    return h is not None and int(h["pid"]) != killed

                try:
                    await _wait(new_holder, 30.0, "a new lock holder")
                except AntiloopError:
                    return
                h = _holder(lock)
                assert h is not None
                takeover = max(0.0, float(h["since_ts"]) - t_kill)
                progress.line(f"  [{label}] pid {h['pid']} took the lock {takeover:.2f} s "
                              "after the kill")

            kill_task = asyncio.create_task(killer())
            await asyncio.gather(*(p.run(on_done) for p in people))
            kill_now.set()
            await kill_task
            # Grace: let redeliveries, late duplicates and timed answers land.
            last = json.dumps(tg.stats(BOT_ID), sort_keys=True)
            quiet = time.monotonic()
            end = time.monotonic() + GRACE_S * 3
            while time.monotonic() < end:
                await asyncio.sleep(0.1)
                now = json.dumps(tg.stats(BOT_ID), sort_keys=True)
                if now != last:
                    last, quiet = now, time.monotonic()
                elif time.monotonic() - quiet >= GRACE_S:
                    break
            figures = measure(tg, people)
            figures.takeover_s = None if side == "naive" else takeover
        finally:
            copies.stop()
    return SideReport(figures, killed, tg.dead_409, sum(len(p.done) for p in people),
                      time.monotonic() - started)


# ---------------------------------------------------------------------------- the report

ROWS: list[tuple[str, str]] = [
    ("updates_sent", "updates sent"),
    ("deliveries", "deliveries (incl. redeliveries)"),
    ("handler_runs", "handler runs (send/edit calls)"),
    ("duplicate_replies", "duplicate replies users saw"),
    ("spinning", "presses left spinning"),
    ("answered_twice", "callbacks answered twice"),
    ("conflicts_409", "409 conflicts"),
    ("lost", "updates lost"),
    ("takeover_s", "takeover time"),
]


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "n/a"
    if key == "takeover_s":
        return f"{value:.2f} s"
    return str(value)


def table(before: Figures, after: Figures) -> str:
    width = max(len(label) for _, label in ROWS) + 2
    head = f"{'':<{width}}{'as bots usually run':>22}{'under antiloop run':>22}"
    lines = [head, "-" * len(head)]
    b, a = asdict(before), asdict(after)
    for key, label in ROWS:
        lines.append(f"{label:<{width}}{_cell(b[key], key):>22}{_cell(a[key], key):>22}")
    return "\n".join(lines)


def ok(after: Figures) -> bool:
    return (after.lost == 0 and after.duplicate_replies == 0 and after.spinning == 0
            and after.answered_twice == 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="antiloop demo",
        description="One storm, twice: three copies of the example menu bot as bots usually run, "
                    "then the same bot under `antiloop run`. Local only (127.0.0.1), no token.")
    p.add_argument("--seed", type=int, default=1, help="makes the storm reproducible (default 1)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--users", type=int, default=DEFAULT_USERS, help=argparse.SUPPRESS)
    p.add_argument("--actions", type=int, default=DEFAULT_ACTIONS, help=argparse.SUPPRESS)
    p.add_argument("--bot", default=default_bot(),
                   help="the bot to run, FILE.py:router (default: examples/menu_bot.py:router)")
    p.add_argument("--rate-limits", choices=("on", "off"), default="off",
                   help="Telegram-like flood limits in the emulator and antiloop's outbox "
                        "(default off: the storm is about duplicates and losses, and fits in "
                        "well under a minute; the chaos suite runs a 429 storm)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    return p


async def _demo(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr, quiet=False)
    bot_file = Path(args.bot.rpartition(":")[0])
    workdir = Path(tempfile.mkdtemp(prefix="antiloop-demo-"))
    limits = ("on (emulator flood control and antiloop's outbox limits)" if args.rate_limits == "on"
              else "off (emulator flood control off, `antiloop run --rate-limit off`)")
    progress.line(f"antiloop demo, seed {args.seed}: {args.users} people, {args.actions} actions "
                  f"each (double and triple presses, repeated /start), {COPIES} copies of "
                  f"{bot_file.name}, redeliver fault {REDELIVER}, SIGKILL halfway; rate limits "
                  f"{limits}; working in {workdir}")
    started = time.monotonic()
    try:
        progress.line("1/2 as bots usually run: a framework-style polling loop, 3 copies, "
                      "no lock, no ledger (SIGKILL of one copy halfway)")
        before = await run_side("naive", args, workdir / "naive", progress) if _mk(
            workdir / "naive") else None
        progress.line("2/2 under `antiloop run`: 3 copies, SQLite store and file lock in the "
                      "temporary directory (SIGKILL of the lock holder halfway)")
        after = await run_side("antiloop", args, workdir / "antiloop", progress) if _mk(
            workdir / "antiloop") else None
    except AntiloopError as exc:
        progress.line(f"antiloop demo: {exc}")
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    assert before is not None and after is not None
    good = ok(after.figures)
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps({"seed": args.seed, "before": asdict(before.figures),
                          "after": asdict(after.figures), "ok": good,
                          "seconds": round(elapsed, 1)}, indent=2))
        return 0 if good else 1
    print()
    print(table(before.figures, after.figures))
    print()
    notes = [f"Same storm script (seed {args.seed}) on both sides; figures read from the emulator's "
             "transcripts and counters.",
             f"Faults on both sides: redeliver {REDELIVER}; SIGKILL halfway (naive: copy pid "
             f"{before.killed_pid}; antiloop: lock holder pid {after.killed_pid})."]
    if after.dead_409 or before.dead_409:
        notes.append(f"Not counted as 409s: {before.dead_409} (as usually run) and "
                     f"{after.dead_409} (antiloop) answered to a killed process's abandoned "
                     "getUpdates: nobody received them.")
    notes.append(f"Done in {elapsed:.1f} s. " + (
        "antiloop: nothing lost, no duplicate reply, no press left spinning, none answered twice."
        if good else "antiloop did NOT keep its promise in this run: please report it."))
    print("\n".join(notes))
    return 0 if good else 1


def _mk(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return True


# ---------------------------------------------------------------------------- the naive loop


class _PlainOutbox(Outbox):
    """No guard at all: each call goes straight to the Bot API (no ledger, window or 429 wait)."""

    async def call(self, ctx: Context | None, method: str, params: dict[str, Any],
                   allow_repeat: bool = False, *, key: int | None = None) -> Any:
        return await self.api.call(method, **{k: v for k, v in params.items() if v is not None})


async def _naive(api_url: str, token: str, target: str, poll_timeout: int) -> int:
    from .router import Router
    from .runtime import load_target

    router = load_target(target)
    if not isinstance(router, Router):
        print(f"antiloop demo _naive: {target} is not a Router", file=sys.stderr)
        return 2
    api = BotAPI(token, api_url)
    store = MemoryStore()
    outbox = _PlainOutbox(api, store, rate_limits=False, reply_window=0)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    username: str | None = None
    with contextlib.suppress(TelegramError):
        me = await api.call("getMe")
        username = str(me.get("username")) if isinstance(me, dict) else None

    async def fetch() -> None:
        offset: int | None = None
        while True:
            try:
                batch = await api.call("getUpdates", offset=offset, timeout=poll_timeout)
            except Conflict as exc:
                log.error("getUpdates: %s", exc.description)
                await asyncio.sleep(1.0)
                continue
            except TelegramError as exc:
                log.error("getUpdates: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for update in batch or []:
                queue.put_nowait(update)
                offset = int(update["update_id"]) + 1

    async def handle() -> None:
        while True:
            update = await queue.get()
            ctx = Context(update, bot_id=api.bot_id, outbox=outbox, store=store,
                          bot_username=username)
            found = router.resolve(ctx)  # the handler itself, without the guards
            try:
                if found is not None:
                    handler, fields = found
                    ctx.match = fields
                    await handler(ctx, **fields)
            except Exception as exc:
                log.error("update %s: handler failed: %s", ctx.update_id, exc)
            finally:
                if ctx.is_callback and not ctx.answered:
                    with contextlib.suppress(Exception):
                        await ctx.answer()

    try:
        await asyncio.gather(fetch(), handle())
    finally:
        await api.shutdown()
    return 0


def _naive_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="antiloop demo _naive")
    p.add_argument("--api-url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--bot", required=True)
    p.add_argument("--poll-timeout", type=int, default=10)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s naive: %(message)s")
    loop = asyncio.new_event_loop()
    task = loop.create_task(_naive(args.api_url, args.token, args.bot, args.poll_timeout))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 0
    finally:
        loop.close()


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_naive":
        return _naive_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.users < 1 or args.actions < 2:
        print("antiloop demo: --users must be at least 1 and --actions at least 2",
              file=sys.stderr)
        return 2
    bot_file = Path(args.bot.rpartition(":")[0])
    if not bot_file.exists():
        print(f"antiloop demo: the example bot {bot_file} is not there; pass --bot FILE.py:router",
              file=sys.stderr)
        return 2
    args.bot = f"{bot_file.resolve()}:{args.bot.rpartition(':')[2]}"
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 130
