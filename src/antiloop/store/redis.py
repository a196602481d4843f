"""``redis://host:6379/0``: the Store in Redis, shared by every machine that runs the bot.

Every operation that reads and then writes is one Lua script, so it is atomic on the server:
no check-then-act across round trips. A bot's keys share one hash tag (``antiloop:{42}:...``),
so they live on one Redis Cluster slot and every script touches one slot only. Values are JSON
(or plain numbers and strings), never pickles. Counts are counters kept by the scripts.

Writes made for an owner (``add_batch`` with an owner, ``recover``, ``complete``, ``fail``) are
fenced: when the owner carries a fencing token (``Identity.fence > 0``, given by the Redis lock)
that is not the bot's current one, the write is refused with :class:`LockError`. A process that
lost its lease (paused, partitioned) cannot overwrite what the new holder does.

Key layout (``P`` = prefix, ``B`` = bot id); see docs/REDIS.md:

=========================  ========  ===========================================================
``P:{B}:e:<update_id>``    hash      an inbox entry: st, raw, ok, at, rt, lu, ow, pid, host, ft,
                                     fb, err (state, update JSON, order key, attempts, received,
                                     lease until, owner, finished at/by, last error)
``P:{B}:open``             zset      update ids of received + claimed entries (score = id)
``P:{B}:done``             zset      update ids of done entries (score = finished_at), for purge
``P:{B}:n``                hash      counters: pending, in_flight, done, rows
``P:{B}:d:<update_id>``    hash      a dead letter: raw, at, err, dt, ok
``P:{B}:dead``             zset      update ids of dead letters (score = id)
``P:{B}:s:<update_id>``    hash      send ledger: ordinal -> result JSON
``P:{B}:win`` / ``winage`` hash/zset windows: key -> last accepted hit (the caller's clock)
``P:{B}:sup``              hash      suppressed duplicates by reason
``P:{B}:fence``            string    fencing counter, written by the Redis lock only
``P:bots``                 set       bot ids ever written (``bot_ids`` filters out empty ones)
=========================  ========  ===========================================================
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from .. import updates as U
from .._util import Clock, Identity
from ..errors import ConfigError, LockError, StoreError
from .base import CLAIMED, RECEIVED, DeadLetter, InboxEntry

T = TypeVar("T")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "antiloop"
WINDOW_HORIZON_S = 3600.0
"""Windows whose last accepted hit is older than this are purged (as in the SQLite store)."""
_FENCED = "ANTILOOP_FENCED"
_FENCED_RE = re.compile(r"ANTILOOP_FENCED (-?\d+) (-?\d+)")
_RECOVER_CHUNK = 500
_RECOVER_SCAN = 2000
_RESET_BATCH = 500
_LOCK_SUFFIXES = (":lock", ":fence", ":standbys", ":standbys:seen", ":takeover")
"""Keys that belong to the Redis lock: ``reset`` leaves them alone."""

_OUR_OPTIONS = ("prefix", "lease")
_PASSED_OPTIONS = ("socket_timeout", "socket_connect_timeout", "health_check_interval",
                   "max_connections", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile",
                   "ssl_keyfile", "ssl_check_hostname", "protocol")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


# -- URLs -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisURL:
    """A parsed ``redis://[:password@]host:port/db?prefix=...&lease=...`` (or ``rediss://``)."""

    client_url: str
    """What redis-py is given: the URL without antiloop's own options."""
    display: str
    """The address for messages and logs: scheme, host, port and db; never the password."""
    prefix: str | None
    lease_s: float | None


def parse_redis_url(url: str) -> RedisURL:
    """Split antiloop's options (``prefix``, ``lease``) from a Redis URL and check it."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"the Redis URL {_mask(url)!r} is not valid ({exc}); use "
                          "redis://[:password@]host:6379/0") from exc
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"{_mask(url)!r} is not a Redis URL; use redis://host:6379/0 "
                          "(rediss:// for TLS)")
    host = parts.hostname or "localhost"
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(f"the Redis URL {_mask(url)!r} names database {db_text!r}; the "
                          "database is a number, as in redis://host:6379/0")
    display = f"{parts.scheme}://{host}:{port}/{db_text}"
    ours: dict[str, str] = {}
    passed: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _OUR_OPTIONS:
            ours[name] = value
        elif name in _PASSED_OPTIONS:
            passed.append((name, value))
        else:
            raise ConfigError(
                f"unknown option {name!r} in the Redis URL {display}: antiloop knows "
                f"{', '.join(_OUR_OPTIONS + _PASSED_OPTIONS)}")
    prefix = ours.get("prefix")
    if prefix is not None and not _PREFIX_RE.match(prefix):
        raise ConfigError(f"prefix={prefix!r} in {display}: use 1-64 letters, digits, '_', '-' "
                          "or '.' (braces would break the per-bot hash tag)")
    lease: float | None = None
    if "lease" in ours:
        try:
            lease = float(ours["lease"])
        except ValueError:
            lease = -1.0
        if not 0.05 <= lease <= 3600:
            raise ConfigError(f"lease={ours['lease']!r} in {display}: give the lock lease in "
                              "seconds, e.g. lease=10 (0.05 to 3600)")
    client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passed), ""))
    return RedisURL(client_url, display, prefix, lease)


def _mask(url: str) -> str:
    """A URL with any password replaced by ``***`` (for messages about a URL we cannot parse)."""
    return re.sub(r"//([^@/]*)@", "//***@", url)


def bot_base(prefix: str, bot_id: int) -> str:
    """``antiloop:{42}``: every key of bot 42 starts with this (one Cluster slot per bot)."""
    return f"{prefix}:{{{bot_id}}}"


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def explain(exc: Exception, where: str, what: str = "the Redis store") -> StoreError:
    """A redis-py error as a StoreError that names the address (never the password) and the
    fix (the lock turns it into a LockError with the same words)."""
    msg = str(exc)
    if isinstance(exc, rexc.AuthenticationError) or any(
            s in msg for s in ("NOAUTH", "WRONGPASS", "invalid password", "invalid username")):
        return StoreError(f"Redis at {where} refused the credentials for {what} ({msg}): put "
                          "the right password in the URL, redis://:PASSWORD@host:6379/0")
    if isinstance(exc, rexc.BusyLoadingError):
        return StoreError(f"Redis at {where} is still loading its data set ({msg}); "
                          "retry in a moment")
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
        return StoreError(
            f"cannot reach Redis at {where} for {what} ({msg}): start Redis there (e.g. "
            "`redis-server`), or point --store / ANTILOOP_STORE (and --lock) at the right "
            "host, port and password")
    if isinstance(exc, rexc.ReadOnlyError):
        return StoreError(f"Redis at {where} is a read-only replica ({msg}): point the URL "
                          "at the primary")
    if "OOM" in msg:
        return StoreError(f"Redis at {where} is out of memory ({msg}): raise maxmemory or "
                          "use maxmemory-policy noeviction with enough memory; nothing is "
                          "confirmed to Telegram until it is stored")
    return StoreError(f"Redis at {where} failed a command of {what}: {msg}")


def fence_error(message: str, bot_id: int) -> LockError:
    """``ANTILOOP_FENCED <current> <ours>`` from a script as a LockError saying what to do."""
    found = _FENCED_RE.findall(message)
    current, ours = found[-1] if found else ("?", "?")
    newer = not found or int(current) > int(ours)
    if newer:
        return LockError(
            f"bot {bot_id}: a newer lock holder (fence {current}) took over from this process "
            f"(fence {ours}); its write was refused. This process must stop now: the new "
            "holder re-runs what was in flight")
    return LockError(
        f"bot {bot_id}: the fencing counter in Redis is {current}, not this process's {ours}: "
        "Redis lost its data (restarted without persistence, or flushed), or the store and the "
        "lock use different Redis servers, databases or prefixes. The write was refused; this "
        "process must stop and take the lock again")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _num(value: float) -> str:
    return repr(float(value))


# -- the scripts --------------------------------------------------------------------------------------
# ARGV[1] is always the bot's key base (``P:{B}``); the keys a script touches are that base plus a
# suffix, so they hash to the bot's slot. KEYS[1] is the counters hash, for routing.
_PRELUDE = r"""
local base = ARGV[1]
local N = base .. ':n'
local OPEN = base .. ':open'
local DONE = base .. ':done'
local DEAD = base .. ':dead'
local SUP = base .. ':sup'
local COUNTER = {received = 'pending', claimed = 'in_flight', done = 'done'}
local function ekey(uid) return base .. ':e:' .. uid end
local function dkey(uid) return base .. ':d:' .. uid end
-- Move an entry from state `old` (nil: new) to `new`, keeping counters and indexes exact.
local function set_state(uid, old, new, now)
  if old ~= new then
    if old and COUNTER[old] then redis.call('HINCRBY', N, COUNTER[old], -1) end
    if COUNTER[new] then redis.call('HINCRBY', N, COUNTER[new], 1) end
  end
  if new == 'received' or new == 'claimed' then
    redis.call('ZADD', OPEN, uid, uid)
  elseif old == 'received' or old == 'claimed' then
    redis.call('ZREM', OPEN, uid)
  end
  if new == 'done' then
    redis.call('ZADD', DONE, now, uid)
  elseif old == 'done' then
    redis.call('ZREM', DONE, uid)
  end
  redis.call('HSET', ekey(uid), 'st', new)
end
-- Refuse a write from an owner whose fencing token is not the bot's current one.
local function fenced(given)
  local ours = tonumber(given) or 0
  if ours <= 0 then return nil end
  local current = redis.call('GET', base .. ':fence') or '0'
  if tonumber(current) ~= ours then
    return redis.error_reply('ANTILOOP_FENCED ' .. current .. ' ' .. given)
  end
  return nil
end
"""

# ARGV: base, fence, now, lease_until, owner, pid, host, n_good,
#       n_good x (update_id, raw, order_key), then (given_id or '', raw, reason) per malformed one.
# Returns one flag per good update: 1 inserted, 0 already known (inbox or dead letters).
_ADD_BATCH = _PRELUDE + r"""
local refused = fenced(ARGV[2]); if refused then return refused end
local now, lease_until, owner = ARGV[3], ARGV[4], ARGV[5]
local n_good = tonumber(ARGV[8])
local out = {}
local redelivered, malformed = 0, 0
local i = 9
for g = 1, n_good do
  local uid, raw, ok = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local k = ekey(uid)
  if redis.call('EXISTS', k) == 1 or redis.call('EXISTS', dkey(uid)) == 1 then
    redelivered = redelivered + 1
    out[g] = 0
  else
    if owner ~= '' then
      redis.call('HSET', k, 'raw', raw, 'ok', ok, 'at', 1, 'rt', now, 'lu', lease_until,
                 'ow', owner, 'pid', ARGV[6], 'host', ARGV[7])
      set_state(uid, nil, 'claimed', now)
    else
      redis.call('HSET', k, 'raw', raw, 'ok', ok, 'at', 0, 'rt', now)
      set_state(uid, nil, 'received', now)
    end
    redis.call('HINCRBY', N, 'rows', 1)
    out[g] = 1
  end
end
while i <= #ARGV do
  local id, raw, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if id == '' then  -- no usable update_id: ids below zero, below the lowest dead letter
    local low = redis.call('ZRANGE', DEAD, 0, 0, 'WITHSCORES')
    local lowest = tonumber(low[2] or '0')
    if lowest > 0 then lowest = 0 end
    id = string.format('%d', lowest - 1)
  end
  local d = dkey(id)
  redis.call('DEL', d)
  redis.call('HSET', d, 'raw', raw, 'at', 0, 'err', 'malformed: ' .. reason, 'dt', now, 'ok', '')
  redis.call('ZADD', DEAD, id, id)
  malformed = malformed + 1
end
if redelivered > 0 then redis.call('HINCRBY', SUP, 'redelivered', redelivered) end
if malformed > 0 then redis.call('HINCRBY', SUP, 'malformed', malformed) end
return out
"""

# ARGV: base, fence, now, lease_until, owner, pid, host, take_all, cursor, max_claims, max_scan
# Returns {next_cursor or '', then (uid, raw, order_key, attempts, received_at, error) per claim}.
_RECOVER = _PRELUDE + r"""
local refused = fenced(ARGV[2]); if refused then return refused end
local now = tonumber(ARGV[3])
local owner = ARGV[5]
local take_all = ARGV[8] == '1'
local max_claims = tonumber(ARGV[10])
local max_scan = tonumber(ARGV[11])
local uids = redis.call('ZRANGEBYSCORE', OPEN, ARGV[9], '+inf', 'LIMIT', 0, max_scan)
local out = {''}
local claims = 0
for _, uid in ipairs(uids) do
  local k = ekey(uid)
  local h = redis.call('HMGET', k, 'st', 'lu', 'ow', 'at', 'raw', 'ok', 'rt', 'err')
  local st = h[1]
  local take = st == 'received' or (st == 'claimed' and
      (take_all or ((tonumber(h[2]) or 0) < now and h[3] ~= owner)))
  if take then
    local at = (tonumber(h[4]) or 0) + 1
    redis.call('HSET', k, 'at', at, 'lu', ARGV[4], 'ow', owner, 'pid', ARGV[6], 'host', ARGV[7])
    set_state(uid, st, 'claimed', ARGV[3])
    table.insert(out, uid)
    table.insert(out, h[5] or '{}')
    table.insert(out, h[6] or '')
    table.insert(out, at)
    table.insert(out, h[7] or '0')
    table.insert(out, h[8] or '')
    claims = claims + 1
    if claims >= max_claims then
      out[1] = '(' .. uid
      return out
    end
  end
end
if #uids >= max_scan then out[1] = '(' .. uids[#uids] end
return out
"""

# ARGV: base, fence, update_id, now, owner
_COMPLETE = _PRELUDE + r"""
local refused = fenced(ARGV[2]); if refused then return refused end
local uid = ARGV[3]
local k = ekey(uid)
local st = redis.call('HGET', k, 'st')
if not st then return 0 end
set_state(uid, st, 'done', ARGV[4])
redis.call('HDEL', k, 'raw', 'lu')
redis.call('HSET', k, 'ft', ARGV[4], 'fb', ARGV[5], 'ow', ARGV[5])
return 1
"""

# ARGV: base, fence, update_id, error, dead (0/1), now, owner. Returns attempts (0: no entry).
_FAIL = _PRELUDE + r"""
local refused = fenced(ARGV[2]); if refused then return refused end
local uid = ARGV[3]
local k = ekey(uid)
local h = redis.call('HMGET', k, 'st', 'at', 'raw', 'ok')
if not h[1] then return 0 end
local at = tonumber(h[2]) or 0
if ARGV[5] == '1' then
  set_state(uid, h[1], 'dead', ARGV[6])
  redis.call('HSET', k, 'err', ARGV[4], 'ft', ARGV[6], 'fb', ARGV[7])
  redis.call('HDEL', k, 'lu')
  local d = dkey(uid)
  redis.call('DEL', d)
  redis.call('HSET', d, 'at', at, 'err', ARGV[4], 'dt', ARGV[6], 'ok', h[4] or '')
  if h[3] then redis.call('HSET', d, 'raw', h[3]) end
  redis.call('ZADD', DEAD, uid, uid)
else
  at = at + 1
  redis.call('HSET', k, 'err', ARGV[4], 'at', at)
end
return at
"""

# ARGV: base, fence, owner ('' = anyone's claims), update ids...
_RELEASE = _PRELUDE + r"""
local refused = fenced(ARGV[2]); if refused then return refused end
local owner = ARGV[3]
local n = 0
for i = 4, #ARGV do
  local uid = ARGV[i]
  local k = ekey(uid)
  local h = redis.call('HMGET', k, 'st', 'ow')
  if h[1] == 'claimed' and (owner == '' or h[2] == owner) then
    set_state(uid, 'claimed', 'received', '0')
    redis.call('HDEL', k, 'lu', 'ow')
    local at = tonumber(redis.call('HGET', k, 'at') or '0')
    if at > 0 then redis.call('HSET', k, 'at', at - 1) end
    n = n + 1
  end
end
return n
"""

# ARGV: base, key, now, window_s, gc_ms. Returns 1 for a duplicate, 0 when recorded now.
_HIT_WINDOW = _PRELUDE + r"""
local W, WA = base .. ':win', base .. ':winage'
local seen = redis.call('HGET', W, ARGV[2])
if seen and tonumber(ARGV[3]) - tonumber(seen) < tonumber(ARGV[4]) then return 1 end
redis.call('HSET', W, ARGV[2], ARGV[3])
redis.call('ZADD', WA, ARGV[3], ARGV[2])
redis.call('PEXPIRE', W, ARGV[5])
redis.call('PEXPIRE', WA, ARGV[5])
return 0
"""

# ARGV: base. Returns {pending, in_flight, done, dead}.
_COUNTS = _PRELUDE + r"""
local c = redis.call('HMGET', N, 'pending', 'in_flight', 'done')
return {tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0, redis.call('ZCARD', DEAD)}
"""

# ARGV: base, limit. Returns (uid, raw, attempts, error, died_at) per dead letter, by update id.
_DEAD_LETTERS = _PRELUDE + r"""
local limit = tonumber(ARGV[2])
if limit <= 0 then return {} end
local out = {}
for _, uid in ipairs(redis.call('ZRANGE', DEAD, 0, limit - 1)) do
  local h = redis.call('HMGET', dkey(uid), 'raw', 'at', 'err', 'dt')
  table.insert(out, uid)
  table.insert(out, h[1] or '')
  table.insert(out, h[2] or '0')
  table.insert(out, h[3] or '')
  table.insert(out, h[4] or '0')
end
return out
"""

# ARGV: base, update_id, now. Returns 1 queued again, 0 no such dead letter, -1 malformed.
_RETRY_DEAD = _PRELUDE + r"""
local uid = ARGV[2]
local d = dkey(uid)
if redis.call('EXISTS', d) == 0 then return 0 end
local h = redis.call('HMGET', d, 'raw', 'err', 'ok')
if string.sub(h[2] or '', 1, 9) == 'malformed' then return -1 end
redis.call('DEL', d)
redis.call('ZREM', DEAD, uid)
local k = ekey(uid)
local st = redis.call('HGET', k, 'st')
if st then
  if h[1] then redis.call('HSET', k, 'raw', h[1]) end
  redis.call('HSET', k, 'at', 0)
  redis.call('HDEL', k, 'err', 'ft', 'fb', 'lu', 'ow')
  set_state(uid, st, 'received', ARGV[3])
elseif h[1] then
  redis.call('HSET', k, 'raw', h[1], 'ok', h[3] or '', 'at', 0, 'rt', ARGV[3])
  redis.call('HINCRBY', N, 'rows', 1)
  set_state(uid, nil, 'received', ARGV[3])
end
return 1
"""

# ARGV: base, update_id, now. Returns 1 dropped, 0 no such dead letter.
_DROP_DEAD = _PRELUDE + r"""
local uid = ARGV[2]
if redis.call('DEL', dkey(uid)) == 0 then return 0 end
redis.call('ZREM', DEAD, uid)
local k = ekey(uid)
local st = redis.call('HGET', k, 'st')
if st then
  set_state(uid, st, 'done', ARGV[3])
  redis.call('HDEL', k, 'raw', 'lu')
  redis.call('HSET', k, 'ft', ARGV[3])
end
return 1
"""

# ARGV: base, older_than, limit, window_cutoff. Returns the number of entries deleted.
_PURGE = _PRELUDE + r"""
local limit = tonumber(ARGV[3])
if limit <= 0 then return 0 end
local ids = redis.call('ZRANGEBYSCORE', DONE, '-inf', '(' .. ARGV[2], 'LIMIT', 0, limit)
for _, uid in ipairs(ids) do
  redis.call('DEL', ekey(uid), base .. ':s:' .. uid)
  redis.call('ZREM', DONE, uid)
end
if #ids > 0 then
  redis.call('HINCRBY', N, 'done', -#ids)
  redis.call('HINCRBY', N, 'rows', -#ids)
end
local W, WA = base .. ':win', base .. ':winage'
for _, key in ipairs(redis.call('ZRANGEBYSCORE', WA, '-inf', '(' .. ARGV[4], 'LIMIT', 0, limit)) do
  redis.call('HDEL', W, key)
  redis.call('ZREM', WA, key)
end
return #ids
"""

_SCRIPTS = {
    "add_batch": _ADD_BATCH, "recover": _RECOVER, "complete": _COMPLETE, "fail": _FAIL,
    "release": _RELEASE, "hit_window": _HIT_WINDOW, "counts": _COUNTS,
    "dead_letters": _DEAD_LETTERS, "retry_dead": _RETRY_DEAD, "drop_dead": _DROP_DEAD,
    "purge": _PURGE,
}


def _entry(bot_id: int, row: list[Any]) -> InboxEntry:
    uid, raw, order_key, attempts, received_at, error = row
    return InboxEntry(bot_id, int(uid), json.loads(raw), int(order_key) if order_key else None,
                      CLAIMED, int(attempts), float(received_at), error or None)


class RedisStore:
    """The Store in Redis: many machines, one inbox per bot, atomic Lua scripts, fenced writes."""

    def __init__(self, url: str = DEFAULT_URL, *, clock: Clock = time.time,
                 prefix: str | None = None, socket_timeout_s: float = 5.0) -> None:
        parsed = parse_redis_url(url)
        self.address = parsed.display
        self.url = parsed.display + (f"?prefix={parsed.prefix}" if parsed.prefix else "")
        """The URL without the password (safe to print)."""
        self.prefix = prefix or parsed.prefix or DEFAULT_PREFIX
        if not _PREFIX_RE.match(self.prefix):
            raise ConfigError(f"Redis key prefix {self.prefix!r}: use 1-64 letters, digits, "
                              "'_', '-' or '.'")
        self._client_url = parsed.client_url
        self._clock = clock
        self._socket_timeout = socket_timeout_s
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    def __repr__(self) -> str:
        return f"RedisStore({self.address!r}, prefix={self.prefix!r})"

    def base(self, bot_id: int) -> str:
        return bot_base(self.prefix, bot_id)

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._client is not None:
            return
        # A blocking pool: a burst of concurrent writes (completions are not awaited one by
        # one) waits for one of `max_connections` connections instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            self._client_url, max_connections=64, timeout=self._socket_timeout,
            decode_responses=True, socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout, health_check_interval=15,
            # Only connection errors are retried, a few times, quickly: a stale pooled
            # connection (Redis restarted) reconnects; a Redis that is down fails fast.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2))
        client = aioredis.Redis.from_pool(pool)
        try:
            await client.ping()
        except rexc.RedisError as exc:
            await client.aclose()
            raise explain(exc, self.address) from exc
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreError(f"the Redis store {self.address} is not open")
        return self._client

    async def _do(self, bot_id: int, call: Awaitable[T]) -> T:
        try:
            return await call
        except rexc.ResponseError as exc:
            if _FENCED in str(exc):
                raise fence_error(str(exc), bot_id) from None
            raise explain(exc, self.address) from exc
        except rexc.RedisError as exc:
            raise explain(exc, self.address) from exc

    async def _run(self, name: str, bot_id: int, *args: Any) -> Any:
        self._redis()
        script = self._scripts[name]
        base = self.base(bot_id)
        return await self._do(bot_id, script(keys=[f"{base}:n"], args=[base, *args]))

    # -- inbox ----------------------------------------------------------------------------------
    async def add_batch(
        self, bot_id: int, updates: list[dict[str, Any]], owner: Identity | None, lease_s: float
    ) -> list[InboxEntry]:
        client = self._redis()
        now = self._clock()
        good: list[tuple[int, dict[str, Any], int | None]] = []
        args: list[Any] = []
        bad: list[Any] = []
        for update in updates:
            try:
                uid = U.validate(update)
            except U.MalformedUpdate as exc:
                given = update.get("update_id") if isinstance(update, dict) else None
                usable = isinstance(given, int) and not isinstance(given, bool)
                raw = _dumps(update) if isinstance(update, dict) else _dumps(
                    {"value": repr(update)[:1000]})
                bad += [str(given) if usable else "", raw, str(exc)]
                continue
            key = U.order_key(update)
            good.append((uid, update, key))
            args += [uid, _dumps(update), "" if key is None else key]
        head: list[Any] = [owner.fence if owner else 0, _num(now),
                _num(now + lease_s) if owner else "", owner.instance_id if owner else "",
                owner.pid if owner else "", owner.host if owner else "", len(good)]
        base = self.base(bot_id)
        pipe = client.pipeline(transaction=False)
        pipe.sadd(f"{self.prefix}:bots", bot_id)
        await self._scripts["add_batch"](keys=[f"{base}:n"], args=[base, *head, *args, *bad],
                                         client=pipe)
        flags = (await self._do(bot_id, pipe.execute()))[1]
        state, attempts = (CLAIMED, 1) if owner else (RECEIVED, 0)
        return [InboxEntry(bot_id, uid, update, key, state, attempts, now)
                for (uid, update, key), flag in zip(good, flags, strict=True) if flag == 1]

    async def recover(
        self, bot_id: int, owner: Identity, lease_s: float, *, take_all: bool, limit: int
    ) -> list[InboxEntry]:
        """As the protocol says; claims are made in chunks of a few hundred (each chunk one
        script), so a large backlog never blocks Redis for long."""
        now = self._clock()
        out: list[InboxEntry] = []
        cursor = "-inf"
        while len(out) < limit:
            res = await self._run(
                "recover", bot_id, owner.fence, _num(now), _num(now + lease_s),
                owner.instance_id, owner.pid, owner.host, 1 if take_all else 0, cursor,
                min(limit - len(out), _RECOVER_CHUNK), _RECOVER_SCAN)
            cursor, flat = res[0], res[1:]
            out += [_entry(bot_id, flat[i:i + 6]) for i in range(0, len(flat), 6)]
            if not cursor:
                break
        return out

    async def complete(self, bot_id: int, update_id: int, owner: Identity) -> None:
        await self._run("complete", bot_id, owner.fence, update_id, _num(self._clock()),
                        owner.instance_id)

    async def fail(
        self, bot_id: int, update_id: int, error: str, *, dead: bool, owner: Identity
    ) -> int:
        return int(await self._run("fail", bot_id, owner.fence, update_id, error[:2000],
                                   1 if dead else 0, _num(self._clock()), owner.instance_id))

    async def release(self, bot_id: int, update_ids: list[int],
                      owner: Identity | None = None) -> None:
        """Give claimed entries back. With ``owner`` (an extension of the protocol), only that
        owner's claims are given back, and only while its fencing token is current: a process
        that lost the lock cannot hand back what the new holder has claimed since."""
        if not update_ids:
            return
        await self._run("release", bot_id, owner.fence if owner else 0,
                        owner.instance_id if owner else "", *update_ids)

    # -- ledger of sends ---------------------------------------------------------------------------
    async def sends_for(self, bot_id: int, update_id: int) -> dict[int, Any]:
        rows = await self._do(bot_id, self._redis().hgetall(f"{self.base(bot_id)}:s:{update_id}"))
        return {int(k): json.loads(v) for k, v in rows.items()}

    async def record_send(
        self, bot_id: int, update_id: int, ordinal: int, method: str, result: Any
    ) -> None:
        await self._do(bot_id, self._redis().hset(f"{self.base(bot_id)}:s:{update_id}",
                                                  str(ordinal), _dumps(result)))

    # -- windows and counters -------------------------------------------------------------------------
    async def hit_window(self, bot_id: int, key: str, window_s: float) -> bool:
        # The window is judged on the caller's clock, stored in the hash; the TTL only collects
        # the garbage of a bot that went away.
        gc_ms = int(max(2 * WINDOW_HORIZON_S, 2 * window_s) * 1000)
        return bool(await self._run("hit_window", bot_id, key, _num(self._clock()),
                                    _num(window_s), gc_ms))

    async def become_exclusive(self, bot_id: int) -> None:
        """Nothing to do: Redis is shared by every machine, so windows stay in Redis (one round
        trip each) rather than in this process."""
        return None

    async def count_suppressed(self, bot_id: int, reason: str, n: int = 1) -> None:
        await self._do(bot_id, self._redis().hincrby(f"{self.base(bot_id)}:sup", reason, n))

    # -- operations -------------------------------------------------------------------------------------
    async def counts(self, bot_id: int) -> dict[str, int]:
        """From counters the scripts keep: O(1), whatever the size of the inbox."""
        pending, in_flight, done, dead = await self._run("counts", bot_id)
        return {"pending": int(pending), "in_flight": int(in_flight), "done": int(done),
                "dead": int(dead)}

    async def suppressed(self, bot_id: int) -> dict[str, int]:
        rows = await self._do(bot_id, self._redis().hgetall(f"{self.base(bot_id)}:sup"))
        return {str(k): int(v) for k, v in sorted(rows.items())}

    async def dead_letters(self, bot_id: int, limit: int = 100) -> list[DeadLetter]:
        flat = await self._run("dead_letters", bot_id, limit)
        return [DeadLetter(bot_id, int(uid), json.loads(raw) if raw else None, int(attempts),
                           error, float(died_at))
                for uid, raw, attempts, error, died_at in
                (flat[i:i + 5] for i in range(0, len(flat), 5))]

    async def retry_dead(self, bot_id: int, update_id: int) -> bool:
        res = int(await self._run("retry_dead", bot_id, update_id, _num(self._clock())))
        if res < 0:
            raise StoreError(f"dead letter {update_id} is a malformed update and would fail "
                             f"again; drop it with `antiloop dead-letters drop {update_id}`")
        return res == 1

    async def drop_dead(self, bot_id: int, update_id: int) -> bool:
        return int(await self._run("drop_dead", bot_id, update_id, _num(self._clock()))) == 1

    async def purge(self, bot_id: int, older_than: float, limit: int) -> int:
        cutoff = self._clock() - WINDOW_HORIZON_S
        return int(await self._run("purge", bot_id, _num(older_than), limit, _num(cutoff)))

    async def reset(self, bot_id: int) -> None:
        """Delete this bot's inbox, dead letters, ledger, windows and counters (in batches, with
        SCAN over the bot's own key pattern). The lock's keys (holder, fencing counter,
        standbys) are kept: the fencing counter must never go back."""
        client = self._redis()
        base = self.base(bot_id)
        keep = {base + suffix for suffix in _LOCK_SUFFIXES}
        batch: list[str] = []
        try:
            async for key in client.scan_iter(match=glob_escape(base) + ":*", count=1000):
                if key in keep:
                    continue
                batch.append(key)
                if len(batch) >= _RESET_BATCH:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
        except rexc.RedisError as exc:
            raise explain(exc, self.address) from exc

    async def bot_ids(self) -> list[int]:
        """Bots with inbox entries or dead letters."""
        client = self._redis()
        members = await self._do(0, client.smembers(f"{self.prefix}:bots"))
        ids = sorted(int(m) for m in map(str, members) if m.lstrip("-").isdigit())
        if not ids:
            return []
        pipe = client.pipeline(transaction=False)
        for bot in ids:
            pipe.hget(f"{self.base(bot)}:n", "rows")
            pipe.zcard(f"{self.base(bot)}:dead")
        res = await self._do(0, pipe.execute())
        return [bot for i, bot in enumerate(ids)
                if int(res[2 * i] or 0) > 0 or int(res[2 * i + 1] or 0) > 0]
