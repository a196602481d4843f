"""``redis://host:6379/0``: a lease in Redis with a fencing token, for bots run on many machines.

The holder is the process whose JSON sits in ``P:{B}:lock`` (set with ``NX PX lease``); it renews
the lease every third of it with a compare-and-pexpire script and deletes it on release with a
compare-and-delete script, both keyed on its instance id and fence. Each successful acquisition
increments ``P:{B}:fence`` in the same script: that number is the fencing token, carried in
``Identity.fence``, and the Redis store refuses writes from any other token.

A lease can be lost while the process is alive (paused with SIGSTOP, a long GC, a network
partition, Redis restarted): :meth:`RedisLock.valid` answers from the local monotonic clock
alone (last renewal sent + lease - safety margin), so a process resumed after its lease sees
False before any network call, and :attr:`RedisLock.lost` is set by the heartbeat as soon as a
renewal finds the key gone or someone else's, or the lease runs out unrenewed.

The same interface as :class:`~antiloop.lock.file.FileLock` (``antiloop status`` and the runtime
use either). See docs/REDIS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.client import Redis
from redis.commands.core import AsyncScript, Script
from redis.retry import Retry

from .._util import Clock, Identity
from ..errors import LockError
from ..store.redis import DEFAULT_PREFIX, bot_base, explain, glob_escape, parse_redis_url
from .file import HolderInfo, LockStatus

T = TypeVar("T")
log = logging.getLogger("antiloop.lock")

DEFAULT_LEASE_S = 10.0


def _boottime() -> float:
    """Monotonic seconds that keep counting while the machine is suspended (CLOCK_BOOTTIME on
    Linux), so a laptop that slept past its lease sees it expired, as Redis does."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


DEFAULT_MONOTONIC: Clock = _boottime if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


class LockNotOwnedError(LockError):
    """The lock is not (or no longer) this process's: its lease expired and, usually, another
    process holds it now. Like redis-py's ``LockNotOwnedError``: stop acting as the holder."""


@dataclass
class RedisHolderInfo(HolderInfo):
    """Who holds a Redis lock: the file lock's fields plus the fencing token."""

    fence: int = 0

    def describe(self, now: float) -> str:
        return f"{super().describe(now)}, fence {self.fence}"


@dataclass
class RedisLockStatus(LockStatus):
    fence: int = 0
    """The holder's fencing token (0 when free)."""
    lease_ttl_s: float | None = None
    """Seconds left on the holder's lease, as Redis counts them."""

    def to_json(self, now: float) -> dict[str, Any]:
        out = super().to_json(now)
        out["fence"] = self.fence if self.held else None
        out["lease_ttl_s"] = self.lease_ttl_s if self.held else None
        return out


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _parse_holder(raw: str | None) -> RedisHolderInfo | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return RedisHolderInfo(
            str(data["instance_id"]), int(data["pid"]), str(data["host"]), int(data["bot_id"]),
            str(data["since"]), float(data["since_ts"]), float(data["heartbeat_ts"]),
            int(data.get("fence", 0)))
    except (ValueError, KeyError, TypeError):
        return None


# KEYS: lock, fence, takeover. ARGV: instance_id, holder JSON without its closing '}' and ending in
# '"fence":', lease_ms. Returns {1, fence} when the lock is ours now, {0, current holder JSON}.
# The fencing counter starts at Redis's clock in ms when the key is missing (a fresh or restarted
# Redis), so a token handed out after a restart without persistence is still above every older one.
_ACQUIRE = r"""
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, h = pcall(cjson.decode, cur)
  if ok and type(h) == 'table' and h.instance_id == ARGV[1] and h.fence then
    local fence = string.format('%d', h.fence)
    redis.call('SET', KEYS[1], ARGV[2] .. fence .. '}', 'PX', ARGV[3])
    return {1, fence}
  end
  return {0, cur}
end
local fence
if redis.call('EXISTS', KEYS[2]) == 1 then
  fence = redis.call('INCR', KEYS[2])
else
  local t = redis.call('TIME')
  fence = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[2], string.format('%d', fence))
end
fence = string.format('%d', fence)
redis.call('SET', KEYS[1], ARGV[2] .. fence .. '}', 'PX', ARGV[3])
redis.call('DEL', KEYS[3])
return {1, fence}
"""

_IS_OURS = r"""
local function ours(cur)
  if not cur then return false end
  local ok, h = pcall(cjson.decode, cur)
  return ok and type(h) == 'table' and h.instance_id == ARGV[1] and h.fence ~= nil
         and tonumber(h.fence) == tonumber(ARGV[2])
end
"""

# KEYS: lock, takeover. ARGV: instance_id, fence, new holder JSON, lease_ms.
# Returns {1, takeover request or ''} when renewed, {0, current holder JSON or ''}.
_RENEW = _IS_OURS + r"""
local cur = redis.call('GET', KEYS[1])
if not ours(cur) then return {0, cur or ''} end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return {1, redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: lock. ARGV: instance_id, fence. Returns {1, ''} when deleted, {0, current holder or ''}.
_RELEASE = _IS_OURS + r"""
local cur = redis.call('GET', KEYS[1])
if not ours(cur) then return {0, cur or ''} end
redis.call('DEL', KEYS[1])
return {1, ''}
"""

# KEYS: standbys hash, seen zset. ARGV: instance_id, info JSON ('' to unregister), ttl_ms.
# Judged on Redis's clock, so machines with skewed clocks agree on who is stale.
_STANDBY = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local gc = tonumber(ARGV[3]) * 10
redis.call('PEXPIRE', KEYS[1], gc)
redis.call('PEXPIRE', KEYS[2], gc)
return 1
"""

# KEYS: standbys hash, seen zset. ARGV: ttl_ms. Prunes the stale ones; returns the others' JSON.
_STANDBYS = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[1])))) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local info = redis.call('HGET', KEYS[1], id)
  if info then table.insert(out, info) end
end
return out
"""


class RedisLock:
    """One holder per bot across every machine that reaches this Redis.

    ``lease_s`` (default: the URL's ``lease=``, else 10 s) is how long a holder that stopped
    renewing keeps the lock; standbys take over within ``lease_s + poll_interval`` of a crash.
    ``margin_s`` (default a fifth of the lease) is taken off the lease when judging
    :meth:`valid` locally. ``monotonic`` is the local clock for that judgement.
    """

    def __init__(self, url: str, identity: Identity, bot_id: int, *,
                 lease_s: float | None = None, clock: Clock = time.time,
                 poll_interval: float = 0.2, prefix: str | None = None,
                 monotonic: Clock = DEFAULT_MONOTONIC, margin_s: float | None = None,
                 standby_ttl_s: float | None = None) -> None:
        parsed = parse_redis_url(url)
        self.address = parsed.display
        self.prefix = prefix or parsed.prefix or DEFAULT_PREFIX
        self.lease_s = float(lease_s if lease_s is not None else parsed.lease_s or DEFAULT_LEASE_S)
        if not 0.05 <= self.lease_s <= 3600:
            raise LockError(f"a Redis lock lease of {self.lease_s} s makes no sense: use 0.05 "
                            "to 3600 s (default 10)")
        self.margin_s = float(margin_s if margin_s is not None else self.lease_s / 5)
        if not 0 <= self.margin_s < self.lease_s:
            raise LockError(f"margin_s ({self.margin_s}) must be below the lease ({self.lease_s})")
        self.identity = identity
        self.bot_id = bot_id
        self.poll_interval = poll_interval
        self.renew_interval = self.lease_s / 3
        self.standby_ttl_s = float(standby_ttl_s if standby_ttl_s is not None
                                   else max(3.0, 3 * poll_interval))
        self._clock = clock
        self._mono = monotonic
        self._client_url = parsed.client_url
        self._timeout = max(0.05, min(2.0, self.lease_s / 3))
        base = bot_base(self.prefix, bot_id)
        self.key = f"{base}:lock"
        self._fence_key = f"{base}:fence"
        self._takeover_key = f"{base}:takeover"
        self._standbys_key = f"{base}:standbys"
        self._seen_key = f"{base}:standbys:seen"
        self._sync: Redis | None = None
        self._sync_scripts: dict[str, Script] = {}
        self._async: aioredis.Redis | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_scripts: dict[str, AsyncScript] = {}
        self._held = False
        self._since = 0.0
        self._valid_until = -math.inf
        self._next_renew = -math.inf
        self.fence = 0
        """The fencing token of the current holding (0 before the first acquisition)."""
        self.lost = asyncio.Event()
        """Set when the lease was found gone or someone else's, or ran out unrenewed."""
        self.handover = asyncio.Event()
        """Set when another process asked this holder to hand over (``--takeover``)."""
        self.lost_reason: str | None = None
        self.renewals = 0
        self._last_holder: str | None = None

    def __repr__(self) -> str:
        return f"RedisLock({self.address!r}, key={self.key!r})"

    @property
    def url(self) -> str:
        """Where the lock lives, without the password (safe to print)."""
        opts = [f"prefix={self.prefix}"] if self.prefix != DEFAULT_PREFIX else []
        opts.append(f"lease={self.lease_s:g}")
        return f"{self.address}?{'&'.join(opts)}"

    @property
    def path(self) -> str:
        return f"{self.address} {self.key}"

    @property
    def held(self) -> bool:
        """This process acquired the lock and has not released it nor seen it lost (it may
        still have expired unnoticed: :meth:`valid` is the stricter test)."""
        return self._held

    def valid(self) -> bool:
        """True while the lease is certainly ours by local monotonic time: the last renewal
        that succeeded was *sent* less than ``lease_s - margin_s`` ago. No network call."""
        return self._held and self._mono() < self._valid_until

    # -- clients -----------------------------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        return {"decode_responses": True, "socket_timeout": self._timeout,
                "socket_connect_timeout": self._timeout}

    def _sync_client(self) -> tuple[Redis, dict[str, Script]]:
        if self._sync is None:
            client = Redis.from_url(self._client_url, retry=Retry(NoBackoff(), 0),
                                          **self._client_kwargs())
            self._sync_scripts = {
                "acquire": client.register_script(_ACQUIRE),
                "renew": client.register_script(_RENEW),
                "release": client.register_script(_RELEASE),
                "standby": client.register_script(_STANDBY),
                "standbys": client.register_script(_STANDBYS),
            }
            self._sync = client
        return self._sync, self._sync_scripts

    def _async_client(self) -> tuple[aioredis.Redis, dict[str, AsyncScript]]:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            client = aioredis.Redis.from_url(self._client_url, retry=AsyncRetry(NoBackoff(), 0),
                                             **self._client_kwargs())
            self._async_scripts = {
                "acquire": client.register_script(_ACQUIRE),
                "renew": client.register_script(_RENEW),
                "standby": client.register_script(_STANDBY),
            }
            self._async, self._async_loop = client, loop
        return self._async, self._async_scripts

    def _error(self, exc: Exception) -> LockError:
        return LockError(str(explain(exc, self.address, f"the lock of bot {self.bot_id}")))

    def _sync_do(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except rexc.RedisError as exc:
            raise self._error(exc) from exc

    async def _async_do(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except rexc.RedisError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        """Close the connections (the lock itself is left as it is: :meth:`release` first)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self._async = None  # its connections belong to a loop; they close with it

    # -- holder info --------------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        return {"instance_id": self.identity.instance_id, "pid": self.identity.pid,
                "host": self.identity.host, "bot_id": self.bot_id, "since": _iso(self._since),
                "since_ts": self._since, "heartbeat_ts": self._clock()}

    def _acquire_args(self) -> tuple[list[str], list[Any]]:
        head = json.dumps(self._info())[:-1] + ',"fence":'
        return ([self.key, self._fence_key, self._takeover_key],
                [self.identity.instance_id, head, int(self.lease_s * 1000)])

    def _renew_args(self) -> tuple[list[str], list[Any]]:
        info = {**self._info(), "fence": self.fence}
        return ([self.key, self._takeover_key],
                [self.identity.instance_id, self.fence, json.dumps(info), int(self.lease_s * 1000)])

    def _ours_args(self) -> tuple[list[str], list[Any]]:
        return [self.key], [self.identity.instance_id, self.fence]

    # -- acquiring ----------------------------------------------------------------------------------
    def _start(self) -> float:
        if self._held and not self.valid():
            self._mark_lost("its lease ran out before it was renewed")
        if not self._held:
            self._since = self._clock()
        return self._mono()

    def _acquired(self, res: list[Any], sent: float) -> bool:
        if int(res[0]) != 1:
            return False
        new = not self._held
        self.fence = int(res[1])
        self._held = True
        self._valid_until = sent + self.lease_s - self.margin_s
        self._next_renew = sent + self.renew_interval
        if new:
            self.lost.clear()
            self.handover.clear()
            self.lost_reason = None
            log.debug("acquired %s with fence %d", self.key, self.fence)
        return True

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it (one round trip; never waits)."""
        if self.valid():
            return True
        sent = self._start()
        client, scripts = self._sync_client()
        keys, args = self._acquire_args()
        res = self._sync_do(lambda: scripts["acquire"](keys=keys, args=args, client=client))
        self._last_holder = res[1] if int(res[0]) != 1 else None
        return self._acquired(res, sent)

    async def try_acquire_async(self) -> bool:
        if self.valid():
            return True
        sent = self._start()
        client, scripts = self._async_client()
        keys, args = self._acquire_args()
        res = await self._async_do(scripts["acquire"](keys=keys, args=args, client=client))
        self._last_holder = res[1] if int(res[0]) != 1 else None
        return self._acquired(res, sent)

    async def acquire(self, stop: asyncio.Event,
                      on_wait: Callable[[LockStatus], None] | None = None) -> bool:
        """Wait as a hot standby until the lock is ours (True) or ``stop`` is set (False).
        While waiting, this process is listed in :meth:`standbys`. Redis being unreachable is
        logged and waited out, not raised."""
        told = False
        registered_at = -math.inf
        trouble: str | None = None
        try:
            while not stop.is_set():
                try:
                    if await self.try_acquire_async():
                        return True
                    if self._mono() - registered_at >= self.standby_ttl_s / 3:
                        await self._register_standby()
                        registered_at = self._mono()
                    holder = _parse_holder(self._last_holder)
                    if not told and holder is not None:
                        told = True
                        if on_wait is not None:
                            on_wait(RedisLockStatus(True, holder, self.path, holder.fence))
                    if trouble is not None:
                        log.info("Redis at %s answers again; waiting for the lock", self.address)
                        trouble = None
                except LockError as exc:
                    if trouble is None:
                        log.warning("%s; waiting for it as a standby, retrying", exc)
                    trouble = str(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval)
            return False
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._unregister_standby(), self._timeout)

    # -- keeping it ---------------------------------------------------------------------------------
    def _mark_lost(self, reason: str) -> None:
        if self._held:
            log.error("lost the lock %s (fence %d): %s", self.key, self.fence, reason)
        self._held = False
        self._valid_until = -math.inf
        self.lost_reason = reason
        self.lost.set()

    def _not_ours(self, current: str, doing: str) -> LockNotOwnedError:
        holder = _parse_holder(current)
        now = self._clock()
        if holder is None:
            why = "the lease expired and the lock is free"
        elif holder.instance_id == self.identity.instance_id:
            why = f"this instance took it again since (fence {holder.fence})"
        else:
            why = f"it is held by {holder.describe(now)}"
        return LockNotOwnedError(
            f"cannot {doing} the lock {self.key} (fence {self.fence}) of bot {self.bot_id}: it "
            f"is not this process's any more: {why}. This process must stop acting as the "
            "holder (its store writes are refused); a standby has taken or will take over")

    def _renewed(self, res: list[Any], sent: float) -> None:
        if int(res[0]) != 1:
            exc = self._not_ours(str(res[1]), "renew")
            self._mark_lost(str(exc))
            raise exc
        self.renewals += 1
        self._valid_until = max(self._valid_until, sent + self.lease_s - self.margin_s)
        self._next_renew = sent + self.renew_interval
        request = res[1]
        if request and not self.handover.is_set():
            asker = _parse_holder(request)
            if asker is None or asker.instance_id != self.identity.instance_id:
                who = f"pid {asker.pid} on {asker.host}" if asker else "another process"
                log.warning("%s asked this instance to hand over the lock %s (--takeover): "
                            "stopping", who, self.key)
                self.handover.set()

    def _check_held(self, doing: str) -> None:
        if not self._held:
            raise LockNotOwnedError(
                f"cannot {doing} the lock {self.key} of bot {self.bot_id}: this process does "
                f"not hold it" + (f" ({self.lost_reason})" if self.lost_reason else ""))

    async def renew(self) -> None:
        """Extend the lease (compare-and-pexpire on our instance id and fence). Raises
        :class:`LockNotOwnedError` (and sets :attr:`lost`) when it is not ours; LockError when
        Redis cannot be reached (the lease may still be ours: :meth:`valid` says till when)."""
        self._check_held("renew")
        sent = self._mono()
        client, scripts = self._async_client()
        keys, args = self._renew_args()
        res = await self._async_do(scripts["renew"](keys=keys, args=args, client=client))
        self._renewed(res, sent)

    def beat(self) -> None:
        """:meth:`renew` without an event loop."""
        self._check_held("renew")
        sent = self._mono()
        client, scripts = self._sync_client()
        keys, args = self._renew_args()
        res = self._sync_do(lambda: scripts["renew"](keys=keys, args=args, client=client))
        self._renewed(res, sent)

    async def heartbeat(self, stop: asyncio.Event) -> None:
        """Renew every ``lease_s / 3`` until the lock is released or lost, or the task is
        cancelled. A renewal that fails for want of Redis is retried; when the lease runs out
        unrenewed, or a renewal finds it gone or someone else's, :attr:`lost` is set and this
        returns. The loop keeps renewing after ``stop`` is set, so a process that drains its
        handlers keeps the lease meanwhile; the runtime cancels it after release. A takeover
        request sets :attr:`handover` and ``stop`` (the runtime then stops gracefully)."""
        retry = max(0.02, self.lease_s / 10)
        while self._held:
            wait = min(self._next_renew, self._valid_until) - self._mono()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self._held:
                return
            if not self.valid():
                self._mark_lost(f"its lease of {self.lease_s:g} s ran out before it could be "
                                "renewed (the process was paused, or Redis was unreachable)")
                return
            try:
                await asyncio.wait_for(self.renew(), max(0.01, self._valid_until - self._mono()))
            except LockNotOwnedError:
                return
            except (LockError, TimeoutError) as exc:
                log.warning("could not renew the lock %s (%s); retrying in %.2f s, the lease "
                            "holds for %.1f s more", self.key, exc or "timed out", retry,
                            max(0.0, self._valid_until - self._mono()))
                self._next_renew = self._mono() + retry
                continue
            if self.handover.is_set():
                stop.set()

    def release(self) -> None:
        """Delete the lock if it is still ours (compare-and-delete). A no-op when it was never
        taken, already released, or known lost (then it is not ours to delete). Raises
        :class:`LockNotOwnedError` when it turns out to be someone else's now; when Redis cannot
        be reached it logs and returns (the lease expires by itself)."""
        if not self._held:
            return
        self._held = False
        self._valid_until = -math.inf
        try:
            client, scripts = self._sync_client()
            keys, args = self._ours_args()
            res = self._sync_do(lambda: scripts["release"](keys=keys, args=args, client=client))
        except LockError as exc:
            log.warning("could not release the lock %s (%s); it expires by itself within "
                        "%.0f s", self.key, exc, self.lease_s)
            return
        if int(res[0]) != 1:
            err = self._not_ours(str(res[1]), "release")
            self.lost_reason = str(err)
            self.lost.set()
            raise err

    # -- standbys -----------------------------------------------------------------------------------
    def _standby_info(self) -> str:
        return json.dumps({"instance_id": self.identity.instance_id, "pid": self.identity.pid,
                           "host": self.identity.host, "bot_id": self.bot_id,
                           "since": _iso(self._clock())})

    async def _register_standby(self) -> None:
        client, scripts = self._async_client()
        keys = [self._standbys_key, self._seen_key]
        args: list[Any] = [self.identity.instance_id, self._standby_info(),
                           int(self.standby_ttl_s * 1000)]
        await self._async_do(scripts["standby"](keys=keys, args=args, client=client))

    async def _unregister_standby(self) -> None:
        client, scripts = self._async_client()
        keys = [self._standbys_key, self._seen_key]
        await self._async_do(scripts["standby"](keys=keys, args=[self.identity.instance_id, "", 0],
                                                client=client))

    def standbys(self) -> list[dict[str, Any]]:
        """Processes waiting for this lock, on any machine; those whose registration was not
        refreshed within ``standby_ttl_s`` (by Redis's clock) are pruned. For bot id 0 (a
        caller that does not know the bot), the standbys of every bot under the prefix."""
        client, scripts = self._sync_client()
        ttl_ms = int(self.standby_ttl_s * 1000)

        def prune_and_list(base: str) -> list[str]:
            keys = [f"{base}:standbys", f"{base}:standbys:seen"]
            return list(scripts["standbys"](keys=keys, args=[ttl_ms], client=client))

        out: list[dict[str, Any]] = []
        for base in self._bases():
            for item in self._sync_do(functools.partial(prune_and_list, base)):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(item))
        return out

    def _bases(self) -> list[str]:
        """The key bases to look at: this bot's, or every bot's under the prefix for bot 0."""
        if self.bot_id != 0:
            return [bot_base(self.prefix, self.bot_id)]
        client, _ = self._sync_client()
        pattern = glob_escape(self.prefix) + ":{*}:*"
        found = self._sync_do(lambda: {k.rsplit("}", 1)[0] + "}" for k in
                                       client.scan_iter(match=pattern, count=1000)
                                       if k.endswith((":lock", ":standbys"))})
        return sorted(found)

    # -- reading --------------------------------------------------------------------------------------
    def read_holder(self) -> RedisHolderInfo | None:
        client, _ = self._sync_client()
        key = self._status_key()
        if key is None:
            return None
        raw = self._sync_do(functools.partial(client.get, key))
        return _parse_holder(str(raw) if raw is not None else None)

    def _status_key(self) -> str | None:
        if self.bot_id != 0:
            return self.key
        client, _ = self._sync_client()
        for base in self._bases():
            key = f"{base}:lock"
            if self._sync_do(functools.partial(client.exists, key)):
                return key
        return None

    def status(self) -> RedisLockStatus:
        """Who holds the lock (held when the key exists). For bot id 0, the first bot under
        the prefix whose lock is held."""
        client, _ = self._sync_client()
        key = self._status_key()
        if key is None:
            return RedisLockStatus(False, None, self.path)
        pipe = client.pipeline(transaction=True)
        pipe.get(key)
        pipe.pttl(key)
        raw, ttl = self._sync_do(pipe.execute)
        holder = _parse_holder(raw)
        path = f"{self.address} {key}"
        if raw is None:
            return RedisLockStatus(False, None, path)
        return RedisLockStatus(True, holder, path, holder.fence if holder else 0,
                               round(ttl / 1000, 3) if ttl and ttl > 0 else None)

    def pid_holds_lock(self, pid: int) -> bool:
        """True if the holder recorded in Redis is ``pid`` on this host."""
        holder = self.read_holder()
        return holder is not None and holder.pid == pid and holder.host == self.identity.host

    def request_takeover(self) -> HolderInfo | None:
        """Ask the holder, on whatever machine, to hand over: a request key its next renewal
        (within ``lease_s / 3``) notices; it then stops gracefully (drains, releases) and the
        first standby to poll takes the lock. Returns the holder asked, or None if the lock is
        free or ours. Nothing is signalled or killed."""
        status = self.status()
        holder = status.holder
        if not status.held or holder is None or holder.instance_id == self.identity.instance_id:
            return None
        key = self._status_key() or self.key
        takeover_key = key[:-len(":lock")] + ":takeover"
        client, _ = self._sync_client()
        request = json.dumps({**json.loads(self._standby_info()), "since_ts": self._clock(),
                              "heartbeat_ts": self._clock(), "fence": 0})
        ttl_ms = int(max(3 * self.lease_s, 30.0) * 1000)
        self._sync_do(lambda: client.set(takeover_key, request, px=ttl_ms))
        return holder
