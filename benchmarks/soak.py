"""The chaos scenarios of tests/chaos at length: ``python benchmarks/soak.py --minutes N [--json]``.

Every scenario runs at least once, then the list is repeated while time is left; each run is
bounded, so the soak stops by itself (the last round may end a little after N minutes). Figures
come from the emulator's transcripts and counters (see tests/chaos/scenarios.py); the table is
the one in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos import scenarios as S  # noqa: E402

Run = Callable[[Path], Awaitable[S.Result]]

SCENARIOS: list[tuple[str, Run]] = [
    ("competing", lambda t: S.competing_start(t, procs=5, users=40, rounds=10)),
    ("kill_loop", lambda t: S.kill_loop(t, seconds=30.0, kill_every=3.0, rate=40.0, users=20)),
    ("sigstop", lambda t: S.sigstop(t, stop_s=7.0, during=50)),
    ("readonly", lambda t: S.store_unwritable(t, how="readonly", during=30)),
    ("disk_full", lambda t: S.store_unwritable(t, how="full", during=30)),
    ("press_storm", lambda t: S.press_storm(t, users=20, rounds=5, redeliver=0.3)),
    ("flood", lambda t: S.flood_storm(t, users=10, per_user=10)),
    ("drop_after_send", lambda t: S.drop_after_send(t, users=10, per_user=10, p=0.25)),
    ("drop_after_edit", lambda t: S.drop_after_edit(t, users=8)),
    ("store_broken_mid_send",
     lambda t: S.store_unwritable(t, how="full", during=10, under_load=True, hold_s=4.0)),
    ("kill_mid_send", lambda t: S.kill_mid_send(t, messages=5)),
]


def merge(into: dict[str, Any], r: S.Result) -> None:
    into.setdefault("scenario", r.name)
    into.setdefault("load", r.load)
    into.setdefault("faults", r.faults)
    into["runs"] = into.get("runs", 0) + 1
    for key in ("updates", "lost", "duplicate_replies", "answered_twice"):
        into[key] = into.get(key, 0) + getattr(r, key)
    into.setdefault("takeovers", []).extend(r.takeovers)
    into["last_extra"] = r.extra


def takeover_text(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{max(values):.2f} s max, {sum(values) / len(values):.2f} s mean ({len(values)})"


async def soak(minutes: float, only: list[str] | None) -> dict[str, Any]:
    chosen = [(n, f) for n, f in SCENARIOS if not only or any(o in n for o in only)]
    totals: dict[str, dict[str, Any]] = {n: {} for n, _ in chosen}
    started = time.monotonic()
    deadline = started + minutes * 60
    tmp = Path(tempfile.mkdtemp(prefix="antiloop-soak-"))
    rounds = 0
    try:
        for _ in range(10_000):
            for name, run in chosen:
                t = time.monotonic()
                result = await run(tmp)
                merge(totals[name], result)
                print(f"[{time.monotonic() - started:6.0f} s] {name}: {result.updates} updates, "
                      f"{result.lost} lost, {result.duplicate_replies} duplicates, "
                      f"{result.answered_twice} answered twice ({time.monotonic() - t:.0f} s)",
                      file=sys.stderr, flush=True)
            rounds += 1
            if time.monotonic() >= deadline:
                break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
            f"{_cores()} cores, Python {platform.python_version()}", "minutes": minutes,
            "rounds": rounds, "seconds": round(time.monotonic() - started),
            "scenarios": [{**v, "takeover": takeover_text(v.get("takeovers", []))}
                          for v in totals.values()]}


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0))


def table(report: dict[str, Any]) -> str:
    head = ("| scenario | load (per run) | faults injected | runs | updates | lost | duplicate "
            "replies | double answers | takeover |")
    lines = [head, "|" + "---|" * 9]
    for s in report["scenarios"]:
        lines.append(f"| {s['scenario']} | {s['load']} | {s['faults']} | {s['runs']} | "
                     f"{s['updates']} | {s['lost']} | {s['duplicate_replies']} | "
                     f"{s['answered_twice']} | {s['takeover']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="time budget (default 5)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--only", action="append", help="run only scenarios whose name contains this")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.minutes > 24 * 60:
        p.error("--minutes must be between 0 and 1440")
    report = asyncio.run(soak(args.minutes, args.only))
    if args.json:
        for s in report["scenarios"]:
            s.pop("takeovers", None)
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"soak {report['date']} on {report['machine']}: {report['rounds']} round(s) in "
              f"{report['seconds']} s")
        print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
