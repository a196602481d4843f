"""Helpers for tests on the real Redis: every test writes under its own prefix and deletes it."""

from __future__ import annotations

from redis.client import Redis


def keys_of(url: str, prefix: str) -> list[str]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        return sorted(str(k) for k in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


def delete_prefix(url: str, prefix: str) -> None:
    client = Redis.from_url(url, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i:i + 500])
    finally:
        client.close()
