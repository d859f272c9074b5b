"""The naive baseline: the 0.6.x token stores' read flows, written out literally.

- File: ``check_token_valid`` tests that the file exists, opens and unpickles
  it; ``load_token`` runs ``check_token_valid`` and then opens and unpickles
  the file a second time.
- Redis: ``check_token_valid`` is ``EXISTS`` + ``HGETALL``; ``load_token`` is
  ``check_token_valid`` and then one more ``HGETALL``.

So a ``load_token`` costs two file reads or three Redis round trips, and the
0.6.x lookup ``check_token_valid`` + ``load_token`` three reads or five round
trips.  Pickle is acceptable only because the bench writes these files itself.
They subclass :class:`TokenStorage` so they could be passed to the client;
they take no lock, as 0.6.x took none.
"""

from __future__ import annotations

import hashlib
import pickle
from datetime import datetime
from pathlib import Path
from typing import Any

from korea_investment_stock.token.storage import TokenStorage


class NaiveFileTokenStorage(TokenStorage):
    """0.6.x file store: one pickled dict, secret included, read twice per load."""

    def __init__(self, file_path: str | Path) -> None:
        self.token_file = Path(file_path)

    def save_token(self, token_data: dict[str, Any]) -> bool:
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        with self.token_file.open("wb") as handle:
            pickle.dump(token_data, handle)
        return True

    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        if not self.token_file.exists():
            return False
        try:
            with self.token_file.open("rb") as handle:
                data = pickle.load(handle)
        except Exception:
            return False
        if data.get("api_key") != api_key or data.get("api_secret") != api_secret:
            return False
        return int(datetime.now().timestamp()) < data.get("timestamp", 0)

    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        if not self.check_token_valid(api_key, api_secret):
            return None
        try:
            with self.token_file.open("rb") as handle:
                return pickle.load(handle)  # type: ignore[no-any-return]
        except Exception:
            return None

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        if self.token_file.exists():
            self.token_file.unlink()
        return True


class NaiveRedisTokenStorage(TokenStorage):
    """0.6.x Redis store: a hash per app key, ``EXISTS`` + ``HGETALL`` + ``HGETALL`` per load."""

    def __init__(self, redis_url: str, key_prefix: str = "korea_investment:token") -> None:
        import redis

        self.redis_client = redis.from_url(redis_url, decode_responses=True)
        self.redis_client.ping()
        self.key_prefix = key_prefix

    def close(self) -> None:
        self.redis_client.close()

    def _key(self, api_key: str) -> str:
        return f"{self.key_prefix}:{hashlib.sha256(api_key.encode()).hexdigest()[:12]}"

    def save_token(self, token_data: dict[str, Any]) -> bool:
        key = self._key(token_data["api_key"])
        self.redis_client.hset(
            key,
            mapping={
                "access_token": token_data["access_token"],
                "access_token_token_expired": token_data["access_token_token_expired"],
                "timestamp": str(token_data["timestamp"]),
                "api_key": token_data["api_key"],
                "api_secret": token_data["api_secret"],
            },
        )
        ttl = int(token_data["timestamp"]) - int(datetime.now().timestamp())
        if ttl > 0:
            self.redis_client.expire(key, ttl)
        return True

    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        key = self._key(api_key)
        if not self.redis_client.exists(key):
            return False
        data = self.redis_client.hgetall(key)
        if data.get("api_secret") != api_secret:
            return False
        return int(datetime.now().timestamp()) < int(data.get("timestamp", 0))

    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        if not self.check_token_valid(api_key, api_secret):
            return None
        data = self.redis_client.hgetall(self._key(api_key))
        if not data:
            return None
        return {
            "access_token": data["access_token"],
            "access_token_token_expired": data["access_token_token_expired"],
            "timestamp": int(data["timestamp"]),
            "api_key": data["api_key"],
            "api_secret": data["api_secret"],
        }

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        self.redis_client.delete(self._key(api_key))
        return True
