"""The ``antiloop`` command: run, status, reset, dead-letters, emulator, demo."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Any

from . import __version__
from ._util import Identity, bot_id_from_token, scrub
from .botapi import DEFAULT_API_URL
from .errors import AntiloopError, ConfigError
from .lock import LockStatus, default_lock_url, open_lock
from .store import DEFAULT_STORE, Store, open_store
from .store.sqlite import path_from_url


class _Scrub(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Scrub())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "off", "false", "no")


def _positive(value: str) -> int:
    """An integer of at least 1 (argparse applies it to flag values and to env defaults)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def _common(p: argparse.ArgumentParser, *, token_required: bool) -> None:
    p.add_argument("--token", default=os.environ.get("TELEGRAM_BOT_TOKEN"),
                   help="bot token (env TELEGRAM_BOT_TOKEN)" + ("" if token_required else
                                                                 "; optional here"))
    p.add_argument("--api-url", default=os.environ.get("TELEGRAM_API_URL", DEFAULT_API_URL),
                   help=f"Bot API base URL (env TELEGRAM_API_URL, default {DEFAULT_API_URL})")
    p.add_argument("--store", default=os.environ.get("ANTILOOP_STORE", DEFAULT_STORE),
                   help=f"store URL (env ANTILOOP_STORE, default {DEFAULT_STORE}; or memory://)")
    p.add_argument("--lock", default=os.environ.get("ANTILOOP_LOCK"),
                   help="lock URL (env ANTILOOP_LOCK, default file:.bot_instance.lock beside the store)")
    p.add_argument("--bot-id", type=int, default=None,
                   help="which bot (when no token is given and the store holds several)")
    p.add_argument("--log-level", default=os.environ.get("ANTILOOP_LOG_LEVEL", "INFO"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="antiloop", description=(
        "Exactly-once Telegram bots: one poller, a durable inbox, a ledger, callbacks answered "
        "once, no reply loops."))
    parser.add_argument("--version", action="version", version=f"antiloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a bot (waits as a hot standby while another instance holds the lock)")
    run.add_argument("target", help="path/to/file.py:name or module:name (a Router or async def handler(ctx))")
    _common(run, token_required=True)
    run.add_argument("--concurrency", type=_positive, default=os.environ.get("ANTILOOP_CONCURRENCY", "16"),
                     help="chats handled at once (env ANTILOOP_CONCURRENCY, default 16)")
    run.add_argument("--max-attempts", type=_positive, default=os.environ.get("ANTILOOP_MAX_ATTEMPTS", "5"),
                     help="attempts before an update is parked as a dead letter (env ANTILOOP_MAX_ATTEMPTS, default 5)")
    run.add_argument("--takeover", action="store_true",
                     help="ask a live holder on this host to hand over (SIGTERM to the pid in the lock)")
    run.add_argument("--delete-webhook", action="store_true",
                     help="if a webhook is set, delete it (keeping pending updates) and poll")
    run.add_argument("--rate-limit", choices=("on", "off"),
                     default="on" if _env_bool("ANTILOOP_RATE_LIMIT", True) else "off",
                     help="proactive Telegram rate limits in the outbox (env ANTILOOP_RATE_LIMIT; 429s are always honoured)")
    run.add_argument("--poll-timeout", type=int, default=30, help="getUpdates long-poll seconds (≤ 50)")
    run.add_argument("--drain-timeout", type=float, default=10.0,
                     help="seconds running handlers get to finish on SIGTERM (default 10)")
    run.add_argument("--webhook-url", default=os.environ.get("ANTILOOP_WEBHOOK_URL"),
                     help="receive updates by webhook at this https URL instead of polling (env ANTILOOP_WEBHOOK_URL)")
    run.add_argument("--listen", default=os.environ.get("ANTILOOP_LISTEN", "127.0.0.1:8080"),
                     help="HOST:PORT the webhook receiver binds (default 127.0.0.1:8080, behind your TLS proxy)")
    run.add_argument("--webhook-secret", default=os.environ.get("ANTILOOP_WEBHOOK_SECRET"),
                     help="secret_token for the webhook (default: derived from the bot token)")
    run.add_argument("--max-connections", type=int, default=40,
                     help="webhook max_connections (1-100, default 40)")
    run.add_argument("--allowed-updates", default=None,
                     help="comma-separated update types to receive (default: Telegram's default)")

    status = sub.add_parser("status", help="who holds the lock; inbox, dead letters, suppressed duplicates")
    _common(status, token_required=False)
    status.add_argument("--json", action="store_true", help="machine-readable")

    reset = sub.add_parser("reset", help="forget this bot's inbox, ledger and windows (refused while a live holder exists)")
    _common(reset, token_required=False)
    reset.add_argument("--yes", action="store_true", help="do not ask")

    dl = sub.add_parser("dead-letters", help="list, retry or drop updates parked after failing")
    _common(dl, token_required=False)
    dl.add_argument("action", choices=("list", "retry", "drop"))
    dl.add_argument("update_id", nargs="?", type=int)
    dl.add_argument("--json", action="store_true")

    sub.add_parser("emulator", help="a local Telegram Bot API emulator (see docs/testing.md)",
                   add_help=False)
    sub.add_parser("demo", help="the storm report: a bot as usually run vs. under antiloop",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "emulator":
        from .testing.emulator import main as emulator_main
        return int(emulator_main(args_list[1:]))
    if args_list and args_list[0] == "demo":
        from .demo import main as demo_main
        return int(demo_main(args_list[1:]))
    args = build_parser().parse_args(args_list)
    setup_logging(args.log_level)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "status":
            return asyncio.run(_cmd_status(args))
        if args.command == "reset":
            return asyncio.run(_cmd_reset(args))
        if args.command == "dead-letters":
            return asyncio.run(_cmd_dead_letters(args))
    except AntiloopError as exc:
        print(f"antiloop: {scrub(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _cmd_run(args: argparse.Namespace) -> int:
    from .runtime import Runtime, Settings, load_target

    if not args.token:
        raise ConfigError("no bot token: pass --token or set TELEGRAM_BOT_TOKEN")
    handler = load_target(args.target)
    allowed = [t.strip() for t in args.allowed_updates.split(",")] if args.allowed_updates else None
    settings = Settings(
        token=args.token, api_url=args.api_url, store=args.store, lock=args.lock,
        concurrency=args.concurrency, max_attempts=args.max_attempts, takeover=args.takeover,
        delete_webhook=args.delete_webhook, rate_limit=args.rate_limit == "on",
        poll_timeout=args.poll_timeout, drain_timeout=args.drain_timeout, allowed_updates=allowed,
        webhook_url=args.webhook_url, listen=args.listen, webhook_secret=args.webhook_secret,
        max_connections=args.max_connections,
    )
    return asyncio.run(Runtime(handler, settings).run())


def _store_exists(url: str) -> bool:
    return not url.startswith("sqlite:///") or path_from_url(url).exists()


async def _bot_id(args: argparse.Namespace, store: Store | None, lock_status: LockStatus | None) -> int:
    if args.token:
        return bot_id_from_token(args.token)
    if args.bot_id is not None:
        return int(args.bot_id)
    if lock_status is not None and lock_status.holder is not None:
        return lock_status.holder.bot_id
    ids = await store.bot_ids() if store is not None else []
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise ConfigError("no bot found in the store; pass --token or --bot-id")
    raise ConfigError(f"the store holds several bots ({', '.join(map(str, ids))}); pass --bot-id")


def _known_bot_id(args: argparse.Namespace) -> int:
    """The bot id when the flags name it (0: unknown yet, the lock tells)."""
    if args.token:
        return bot_id_from_token(args.token)
    return int(args.bot_id) if args.bot_id is not None else 0


def _lock_status(args: argparse.Namespace) -> LockStatus:
    lock = open_lock(args.lock or default_lock_url(args.store), Identity(), _known_bot_id(args))
    return lock.status()


def _standbys(args: argparse.Namespace, bot_id: int | None) -> list[dict[str, Any]]:
    lock = open_lock(args.lock or default_lock_url(args.store), Identity(), bot_id or 0)
    return lock.standbys()


def _lock_state(status: LockStatus, now: float) -> str:
    if not status.held:
        return "free"
    if status.holder is None:
        return "held"
    return "alive" if status.holder.heartbeat_age(now) < 5.0 else "unresponsive"


async def _open(args: argparse.Namespace) -> Store | None:
    if not _store_exists(args.store):
        return None
    store = open_store(args.store)
    await store.open()
    return store


async def _cmd_status(args: argparse.Namespace) -> int:
    now = time.time()
    lock_status = _lock_status(args)
    store = await _open(args)
    try:
        bot_id = await _bot_id(args, store, lock_status) if (store or lock_status.holder or args.token or args.bot_id) else None
        counts = {"pending": 0, "in_flight": 0, "done": 0, "dead": 0}
        suppressed: dict[str, int] = {}
        dead: list[Any] = []
        if store is not None and bot_id is not None:
            counts = await store.counts(bot_id)
            suppressed = await store.suppressed(bot_id)
            dead = await store.dead_letters(bot_id, limit=5)
    finally:
        if store is not None:
            await store.close()
    lock_json = lock_status.to_json(now)
    lock_json["state"] = _lock_state(lock_status, now)
    standbys = _standbys(args, bot_id)
    lock_json["standbys"] = standbys
    out: dict[str, Any] = {
        "bot_id": bot_id,
        "store": args.store,
        "store_exists": store is not None,
        "lock": lock_json,
        "inbox": counts,
        "suppressed": suppressed,
        "dead_letters": [{"update_id": d.update_id, "attempts": d.attempts, "error": d.error}
                         for d in dead],
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"antiloop status: bot {bot_id if bot_id is not None else '?'}")
    print(f"  store  {args.store}" + ("" if store is not None else "  (no file yet: nothing ran here)"))
    h = lock_status.holder
    state = lock_json["state"]
    if state == "free":
        tail = f" (last holder pid {h.pid} on {h.host} is gone)" if h else ""
        print(f"  lock   {lock_status.path}: free{tail}; the next `antiloop run` takes it")
    elif h is not None:
        age = h.heartbeat_age(now)
        verdict = ("alive" if state == "alive" else
                   f"UNRESPONSIVE: heartbeat {age:.0f} s old (stopped with SIGSTOP, or stuck); "
                   "standbys keep waiting while the kernel lock is held")
        print(f"  lock   {lock_status.path}: held by pid {h.pid} on {h.host} since {h.since}, "
              f"heartbeat {age:.1f} s ago: {verdict}")
    else:
        print(f"  lock   {lock_status.path}: held (holder info not written yet)")
    for sb in standbys:
        print(f"  standby pid {sb.get('pid')} on {sb.get('host')} waiting since {sb.get('since')}")
    print(f"  inbox  {counts['pending']} pending, {counts['in_flight']} in flight, "
          f"{counts['done']} done, {counts['dead']} dead")
    if suppressed:
        print("  suppressed duplicates  " + ", ".join(f"{k} {v}" for k, v in sorted(suppressed.items())))
    else:
        print("  suppressed duplicates  none")
    if dead:
        print(f"  dead letters ({counts['dead']}): `antiloop dead-letters list`")
        for d in dead:
            print(f"    update {d.update_id}: {d.attempts} attempts: {d.error[:120]}")
    return 0


async def _cmd_reset(args: argparse.Namespace) -> int:
    now = time.time()
    lock_status = _lock_status(args)
    if lock_status.held:
        h = lock_status.holder
        who = f"pid {h.pid} on {h.host}" if h else "another process"
        raise ConfigError(f"refusing to reset: {who} holds the lock {lock_status.path} "
                          f"({_lock_state(lock_status, now)}); stop it first")
    store = await _open(args)
    if store is None:
        print(f"nothing to reset: {args.store} does not exist")
        return 0
    try:
        bot_id = await _bot_id(args, store, None)
        counts = await store.counts(bot_id)
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError("reset deletes the inbox and ledger: pass --yes to confirm")
            answer = await asyncio.to_thread(input, f"delete bot {bot_id}'s inbox ({sum(counts.values())} entries), ledger and windows? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        await store.reset(bot_id)
    finally:
        await store.close()
    print(f"bot {bot_id}: deleted {sum(counts.values())} inbox entries, the send ledger, "
          "windows and counters")
    return 0


async def _cmd_dead_letters(args: argparse.Namespace) -> int:
    store = await _open(args)
    if store is None:
        print(f"no dead letters: {args.store} does not exist")
        return 0
    try:
        bot_id = await _bot_id(args, store, _lock_status(args))
        if args.action == "list":
            dead = await store.dead_letters(bot_id, limit=1000)
            if args.json:
                print(json.dumps([{
                    "update_id": d.update_id, "attempts": d.attempts, "error": d.error,
                    "died_at": dt.datetime.fromtimestamp(d.died_at, dt.UTC).isoformat(timespec="seconds"),
                    "update": d.update} for d in dead], indent=2))
            elif not dead:
                print(f"bot {bot_id}: no dead letters")
            else:
                for d in dead:
                    when = dt.datetime.fromtimestamp(d.died_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
                    print(f"{d.update_id}\t{d.attempts} attempts\t{when}\t{d.error[:200]}")
            return 0
        if args.update_id is None:
            raise ConfigError(f"dead-letters {args.action} needs an UPDATE_ID (see `antiloop dead-letters list`)")
        if args.action == "retry":
            ok = await store.retry_dead(bot_id, args.update_id)
            print(f"update {args.update_id}: " + ("queued again; the lock holder runs it within seconds"
                                                   if ok else "no such dead letter"))
        else:
            ok = await store.drop_dead(bot_id, args.update_id)
            print(f"update {args.update_id}: " + ("dropped" if ok else "no such dead letter"))
        return 0 if ok else 1
    finally:
        await store.close()


if __name__ == "__main__":
    raise SystemExit(main())
