"""``memory://``: the Store in a dict. For tests and for measuring what durability costs."""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from typing import Any

from .. import updates as U
from .._util import Clock, Identity
from .base import CLAIMED, DEAD, DONE, RECEIVED, DeadLetter, InboxEntry


class _Row:
    __slots__ = ("entry", "finished_at", "lease_until", "owner")

    def __init__(self, entry: InboxEntry) -> None:
        self.entry = entry
        self.lease_until = 0.0
        self.owner: str | None = None
        self.finished_at: float | None = None


class MemoryStore:
    """Keeps everything in this process; nothing survives a restart."""

    def __init__(self, url: str = "memory://", *, clock: Clock = time.time) -> None:
        self.url = url
        self._clock = clock
        self._rows: dict[int, dict[int, _Row]] = defaultdict(dict)
        self._dead: dict[int, dict[int, DeadLetter]] = defaultdict(dict)
        self._sends: dict[tuple[int, int], dict[int, Any]] = defaultdict(dict)
        self._windows: dict[tuple[int, str], float] = {}
        self._suppressed: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _claim(self, row: _Row, owner: Identity, lease_s: float) -> InboxEntry:
        row.entry.state = CLAIMED
        row.entry.attempts += 1
        row.owner = owner.instance_id
        row.lease_until = self._clock() + lease_s
        return copy.copy(row.entry)

    async def add_batch(
        self, bot_id: int, updates: list[dict[str, Any]], owner: Identity | None, lease_s: float
    ) -> list[InboxEntry]:
        rows = self._rows[bot_id]
        now = self._clock()
        out: list[InboxEntry] = []
        for update in updates:
            try:
                uid = U.validate(update)
            except U.MalformedUpdate as exc:
                self._record_malformed(bot_id, update, str(exc), now)
                continue
            if uid in rows or uid in self._dead[bot_id]:
                self._suppressed[bot_id]["redelivered"] += 1
                continue
            row = _Row(InboxEntry(bot_id, uid, update, U.order_key(update), RECEIVED, 0, now))
            rows[uid] = row
            out.append(self._claim(row, owner, lease_s) if owner else copy.copy(row.entry))
        return out

    def _record_malformed(self, bot_id: int, update: Any, reason: str, now: float) -> None:
        uid = update.get("update_id") if isinstance(update, dict) else None
        key = uid if isinstance(uid, int) else -(len(self._dead[bot_id]) + 1)
        raw = update if isinstance(update, dict) else {"value": repr(update)[:1000]}
        self._dead[bot_id][key] = DeadLetter(bot_id, key, raw, 0, f"malformed: {reason}", now)
        self._suppressed[bot_id]["malformed"] += 1

    async def recover(
        self, bot_id: int, owner: Identity, lease_s: float, *, take_all: bool, limit: int
    ) -> list[InboxEntry]:
        now = self._clock()
        out: list[InboxEntry] = []
        for uid in sorted(self._rows[bot_id]):
            row = self._rows[bot_id][uid]
            state = row.entry.state
            if state == RECEIVED or (state == CLAIMED and (take_all or row.lease_until < now)):
                if state == CLAIMED and row.owner == owner.instance_id and not take_all:
                    continue
                out.append(self._claim(row, owner, lease_s))
                if len(out) >= limit:
                    break
        return out

    async def complete(self, bot_id: int, update_id: int, owner: Identity) -> None:
        row = self._rows[bot_id].get(update_id)
        if row is not None:
            row.entry.state = DONE
            row.owner = owner.instance_id
            row.finished_at = self._clock()
            row.entry.update = {}  # the raw update is not needed once done

    async def fail(
        self, bot_id: int, update_id: int, error: str, *, dead: bool, owner: Identity
    ) -> int:
        row = self._rows[bot_id].get(update_id)
        if row is None:
            return 0
        row.entry.error = error
        if dead:
            now = self._clock()
            self._dead[bot_id][update_id] = DeadLetter(
                bot_id, update_id, row.entry.update, row.entry.attempts, error, now
            )
            row.entry.state = DEAD
            row.finished_at = now
        else:
            row.entry.attempts += 1
        return row.entry.attempts

    async def release(self, bot_id: int, update_ids: list[int],
                      owner: Identity | None = None) -> None:
        for uid in update_ids:
            row = self._rows[bot_id].get(uid)
            if row is not None and row.entry.state == CLAIMED and (
                    owner is None or row.owner == owner.instance_id):
                row.entry.state = RECEIVED
                row.entry.attempts = max(0, row.entry.attempts - 1)
                row.owner = None

    async def sends_for(self, bot_id: int, update_id: int) -> dict[int, Any]:
        return dict(self._sends.get((bot_id, update_id), {}))

    async def record_send(
        self, bot_id: int, update_id: int, ordinal: int, method: str, result: Any
    ) -> None:
        self._sends[(bot_id, update_id)][ordinal] = result

    async def hit_window(self, bot_id: int, key: str, window_s: float) -> bool:
        now = self._clock()
        seen = self._windows.get((bot_id, key))
        if seen is not None and now - seen < window_s:
            return True
        self._windows[(bot_id, key)] = now
        return False

    async def become_exclusive(self, bot_id: int) -> None:
        return None  # everything is local already

    async def count_suppressed(self, bot_id: int, reason: str, n: int = 1) -> None:
        self._suppressed[bot_id][reason] += n

    async def counts(self, bot_id: int) -> dict[str, int]:
        out = {"pending": 0, "in_flight": 0, "done": 0, "dead": len(self._dead[bot_id])}
        for row in self._rows[bot_id].values():
            state = row.entry.state
            if state == RECEIVED:
                out["pending"] += 1
            elif state == CLAIMED:
                out["in_flight"] += 1
            elif state == DONE:
                out["done"] += 1
        return out

    async def suppressed(self, bot_id: int) -> dict[str, int]:
        return dict(self._suppressed[bot_id])

    async def dead_letters(self, bot_id: int, limit: int = 100) -> list[DeadLetter]:
        return sorted(self._dead[bot_id].values(), key=lambda d: d.update_id)[:limit]

    async def retry_dead(self, bot_id: int, update_id: int) -> bool:
        dead = self._dead[bot_id].pop(update_id, None)
        if dead is None:
            return False
        row = self._rows[bot_id].get(update_id)
        if row is None and dead.update:
            row = _Row(InboxEntry(bot_id, update_id, dead.update, U.order_key(dead.update),
                                  RECEIVED, 0, self._clock()))
            self._rows[bot_id][update_id] = row
        if row is not None:
            row.entry.state = RECEIVED
            row.entry.attempts = 0
            row.finished_at = None
        return True

    async def drop_dead(self, bot_id: int, update_id: int) -> bool:
        dead = self._dead[bot_id].pop(update_id, None)
        if dead is not None:
            row = self._rows[bot_id].get(update_id)
            if row is not None:
                row.entry.state = DONE
                row.finished_at = self._clock()
        return dead is not None

    async def purge(self, bot_id: int, older_than: float, limit: int) -> int:
        rows = self._rows[bot_id]
        old = [uid for uid, r in rows.items()
               if r.finished_at is not None and r.finished_at < older_than
               and r.entry.state == DONE][:limit]
        for uid in old:
            del rows[uid]
            self._sends.pop((bot_id, uid), None)
        now = self._clock()
        stale = [k for k, t in self._windows.items() if k[0] == bot_id and now - t > 3600][:limit]
        for k in stale:
            del self._windows[k]
        return len(old)

    async def reset(self, bot_id: int) -> None:
        self._rows.pop(bot_id, None)
        self._dead.pop(bot_id, None)
        self._suppressed.pop(bot_id, None)
        for key in [k for k in self._sends if k[0] == bot_id]:
            del self._sends[key]
        for wkey in [k for k in self._windows if k[0] == bot_id]:
            del self._windows[wkey]

    async def bot_ids(self) -> list[int]:
        return sorted(set(self._rows) | set(self._dead))
