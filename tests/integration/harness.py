"""Run real `antiloop run` processes against an in-process emulator, and read what they did."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PYTHON, ROOT, subprocess_env

BOTS = str(ROOT / "tests" / "integration" / "bots.py")


async def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``cond`` (bounded); the event loop keeps serving the emulator meanwhile."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


class Fleet:
    """Several `antiloop run` processes of one bot sharing one store and one lock."""

    def __init__(self, tmp: Path, api_url: str, token: str, target: str, *extra: str) -> None:
        self.tmp = tmp
        self.api_url = api_url
        self.token = token
        self.target = f"{BOTS}:{target}" if ":" not in target else target
        self.extra = list(extra)
        self.store = f"sqlite:///{tmp}/bot.db"
        self.lock = f"file:{tmp}/.bot_instance.lock"
        self.log = tmp / "handled.log"
        self.procs: list[subprocess.Popen[bytes]] = []

    def args(self, *more: str) -> list[str]:
        return ["--token", self.token, "--api-url", self.api_url, "--store", self.store,
                "--lock", self.lock, *more]

    def start(self, n: int = 1, *more: str) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(n):
            i = len(self.procs)
            out = open(self.tmp / f"proc-{i}.log", "wb")
            proc = subprocess.Popen(
                [PYTHON, "-m", "antiloop", "run", self.target, *self.args(
                    "--rate-limit", "off", "--poll-timeout", "1", "--log-level", "INFO",
                    *self.extra, *more)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp,
                env=subprocess_env(ANTILOOP_TEST_LOG=str(self.log)),
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    async def wait(self, cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        """``wait_until`` that shows each process's last log lines when it times out."""
        try:
            await wait_until(cond, timeout, what)
        except AssertionError as exc:
            tails = "\n".join(
                f"--- process {i} (pid {p.pid}, exit {p.poll()}):\n" + "\n".join(self.output(i).splitlines()[-15:])
                for i, p in enumerate(self.procs))
            raise AssertionError(f"{exc}\n{tails}") from None

    def output(self, i: int) -> str:
        return (self.tmp / f"proc-{i}.log").read_text(errors="replace")

    def holder_pid(self) -> int | None:
        path = Path(self.lock[len("file:"):])
        try:
            data = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            return None
        if not data:
            return None
        pid = int(data["pid"])
        alive = [p for p in self.procs if p.pid == pid and p.poll() is None]
        return pid if alive else None

    def events(self, kind: str) -> list[tuple[int, int, int]]:
        """(update_id, attempt, pid) for each logged event of a kind."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == kind:
                out.append((int(parts[1]), int(parts[2]), int(parts[3])))
        return out

    def done_counts(self) -> Counter[int]:
        return Counter(uid for uid, _, _ in self.events("done"))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "antiloop", *args], capture_output=True, text=True,
                              cwd=self.tmp, env=subprocess_env(), timeout=60)

    def status(self) -> dict:
        res = self.cli("status", "--json", *self.args())
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        os.kill(pid, sig)
        for p in self.procs:
            if p.pid == pid and sig == signal.SIGKILL:
                p.wait(10)

    def stop_all(self) -> list[int | None]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(20))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes
