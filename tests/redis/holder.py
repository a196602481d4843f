"""A process that holds (or waits for) a RedisLock, for the lock tests to kill, stop and resume.

``python holder.py '{"mode": ..., "url": ..., "bot": ..., "lease": ...}'``

- ``hold``: take the lock, keep it alive, print ``{"fence": N}``, wait to be killed.
- ``standby``: wait for the lock as a standby (listed in ``standbys()``), print ``{"waiting": 1}``.
- ``pause``: take the lock, claim update 1 in the RedisStore with the fencing token, print
  ``{"fence": N}``, then wait for a line on stdin (the test SIGSTOPs us meanwhile, lets another
  process take over, SIGCONTs us and writes the line) and print what this process then sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from antiloop._util import Identity  # noqa: E402
from antiloop.errors import LockError  # noqa: E402
from antiloop.lock.redis import RedisLock  # noqa: E402
from antiloop.store.redis import RedisStore  # noqa: E402


def say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(cfg: dict[str, Any]) -> None:
    me = Identity(cfg.get("name", "child"), os.getpid(), cfg.get("host", "childhost"))
    lock = RedisLock(cfg["url"], me, cfg["bot"], lease_s=cfg["lease"], poll_interval=0.05,
                     standby_ttl_s=cfg.get("standby_ttl"))
    if cfg["mode"] == "standby":
        task = asyncio.create_task(lock.acquire(asyncio.Event()))
        await asyncio.sleep(0.2)
        say({"waiting": 1})
        await task
        return
    assert lock.try_acquire(), "the lock was not free"
    beat = asyncio.create_task(lock.heartbeat(asyncio.Event()))
    if cfg["mode"] == "hold":
        say({"fence": lock.fence})
        await asyncio.Event().wait()
    store = RedisStore(cfg["url"])
    await store.open()
    owner = dataclasses.replace(me, fence=lock.fence)
    update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "text": "hi",
                                          "chat": {"id": 7, "type": "private"}}}
    await store.add_batch(cfg["bot"], [update], owner, 60)
    say({"fence": lock.fence})
    await asyncio.to_thread(sys.stdin.readline)  # stopped and resumed while waiting here
    report: dict[str, Any] = {"valid": lock.valid()}
    try:
        await asyncio.wait_for(lock.lost.wait(), 10)
        report["lost"] = lock.lost_reason
    except TimeoutError:
        report["lost"] = None
    try:
        await store.complete(cfg["bot"], 1, owner)
        report["complete"] = "accepted"
    except LockError as exc:
        report["complete"] = str(exc)
    try:
        await store.add_batch(cfg["bot"], [{**update, "update_id": 2}], owner, 60)
        report["add_batch"] = "accepted"
    except LockError as exc:
        report["add_batch"] = str(exc)
    try:
        await lock.renew()
        report["renew"] = "renewed"
    except LockError as exc:
        report["renew"] = type(exc).__name__
    lock.release()  # known lost: must not touch the new holder's key
    report["heartbeat_done"] = beat.done()
    await store.close()
    say(report)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
