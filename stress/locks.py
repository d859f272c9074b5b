"""Backend-specific looks at the store the scenarios need (the lock, the failure marker)."""

from __future__ import annotations

from typing import Any

from filelock import FileLock, Timeout


def redis_client(spec: dict[str, Any]) -> Any:
    import redis

    return redis.Redis.from_url(spec["redis_url"], socket_timeout=5, socket_connect_timeout=5)


def redis_keys(spec: dict[str, Any]) -> Any:
    from korea_investment_stock.token.redis import RedisKeys

    return RedisKeys.for_api_key(spec["key_prefix"], spec["app_key"])


def assert_issue_lock_free(spec: dict[str, Any]) -> None:
    """Fail unless nobody holds the cross-process issuance lock (file lock / Redis lease)."""
    if spec["kind"] == "file":
        from korea_investment_stock.token.file import FileTokenStorage

        lock = FileLock(str(FileTokenStorage(spec["token_file"]).issuance_lock_path(spec["app_key"])))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise AssertionError("the issuance file lock is still held") from None
        lock.release()
        return
    client = redis_client(spec)
    try:
        ttl = client.pttl(redis_keys(spec).lock)
    finally:
        client.close()
    assert ttl == -2, f"the Redis issuance lease is still held ({ttl} ms left)"


def failure_marker_ms(spec: dict[str, Any]) -> int:
    """Milliseconds left on the Redis failure marker (0 for none, and always 0 for files)."""
    if spec["kind"] == "file":
        return 0
    client = redis_client(spec)
    try:
        from korea_investment_stock.token.record import credential_fingerprint

        marker = redis_keys(spec).failed(credential_fingerprint(spec["app_key"], spec["app_secret"]))
        return max(0, int(client.pttl(marker)))
    finally:
        client.close()
