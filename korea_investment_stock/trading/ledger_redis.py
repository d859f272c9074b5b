"""The fleet-wide order ledger, in Redis beside the token.

Two hashes per account under the token stores' prefix: ``…:orders:<account>:known``
(order number -> claim time) and ``…:orders:<account>:flight`` (ticket ->
``<signature>|<deadline>``).  A claim is one Lua script (look, then set), so two
servers can never both claim a number; the scripts use only the commands the
documented minimal ACL already grants the token store.
"""

from __future__ import annotations

import time
from typing import Any

from .ledger import KNOWN_SECONDS, SharedOrderLedger, account_digest, signature_digest

__all__ = ["RedisOrderLedger"]

# KEYS[1] known hash; ARGV: order number, now (s), expiry of the hash (ms).  1: claimed, 0: taken.
_CLAIM = """
local at = redis.call('hget', KEYS[1], ARGV[1])
if at and tonumber(at) > tonumber(ARGV[2]) - tonumber(ARGV[3]) / 1000 then return 0 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"""


class RedisOrderLedger(SharedOrderLedger):
    """Claims and tickets in Redis, so every server sharing the account sees them."""

    def __init__(self, client: Any, key_prefix: str) -> None:
        super().__init__()
        self._client = client
        self.key_prefix = key_prefix
        self._claim_script = client.register_script(_CLAIM)

    def __repr__(self) -> str:
        return f"RedisOrderLedger(key_prefix={self.key_prefix!r})"

    def _key(self, account: str, kind: str) -> str:
        return f"{self.key_prefix}:orders:{account_digest(account)}:{kind}"

    def _claim(self, account: str, order_no: str) -> bool:
        ms = KNOWN_SECONDS * 1000
        return bool(self._claim_script(keys=[self._key(account, "known")], args=[order_no, repr(time.time()), ms]))

    def _is_known(self, account: str, order_no: str) -> bool:
        at = self._client.hget(self._key(account, "known"), order_no)
        return at is not None and float(at) > time.time() - KNOWN_SECONDS

    def _begin(self, account: str, ticket: str, signature: str, until: float) -> None:
        key = self._key(account, "flight")
        self._client.hset(key, ticket, f"{signature_digest(signature)}|{until!r}")
        self._client.pexpire(key, KNOWN_SECONDS * 1000)

    def _end(self, account: str, ticket: str) -> None:
        self._client.hdel(self._key(account, "flight"), ticket)

    def _pending(self, account: str, signature: str) -> float:
        key = self._key(account, "flight")
        wanted = signature_digest(signature)
        now = time.time()
        latest = 0.0
        stale: list[Any] = []
        for ticket, value in self._client.hgetall(key).items():
            text = value.decode() if isinstance(value, bytes) else str(value)
            digest, _, until_text = text.partition("|")
            try:
                until = float(until_text)
            except ValueError:
                continue
            if until <= now:
                stale.append(ticket)  # its process died in flight: the deadline has passed
            elif digest == wanted:
                latest = max(latest, until)
        if stale:
            self._client.hdel(key, *stale)
        return latest
