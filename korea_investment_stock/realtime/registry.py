"""Which subscriptions are wanted, by whom, and the cap of 41 per app key.

Why a registry apart from the session: KIS counts 41 subscriptions per app key, every kind
together, counted per (kind, symbol); the 42nd gets ``OPSP0008``. Several consumers may want the
same (kind, symbol): the session subscribes once, and releases only when the last holder lets go.
Checking the cap here, before any frame is sent, means a refusal never disturbs the session.

This registry is in-process. Phase 2 shares it through the token store (the union of every
process's wants, each holder's entry with a lease so a dead process's wants expire); it keeps
this interface, :class:`Registry`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import ConfigurationError, SubscriptionLimitError
from .frames import NOTICE_TR_IDS, ORDERBOOK_TR_ID, TRADE_TR_ID

__all__ = ["SUBSCRIPTION_CAP", "Kind", "Registry", "Subscription", "SubscriptionRegistry"]

#: KIS's cap per app key, every kind together (doc: KIS's sample repo and its 2025-08 notice).
SUBSCRIPTION_CAP = 41

Kind = Literal["trades", "orderbooks", "notices"]


@dataclass(frozen=True, order=True)
class Subscription:
    """One slot: ``kind`` and its key (a stock code, or the HTS ID for notices)."""

    kind: Kind
    key: str

    def tr_id(self, *, mock: bool = False) -> str:
        """The KIS tr_id of this kind (notices differ on mock: H0STCNI9)."""
        if self.kind == "trades":
            return TRADE_TR_ID
        if self.kind == "orderbooks":
            return ORDERBOOK_TR_ID
        if self.kind == "notices":
            return NOTICE_TR_IDS[1] if mock else NOTICE_TR_IDS[0]
        raise ConfigurationError(f"unknown subscription kind {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


class Registry(Protocol):
    """What a stream's feed needs from a registry (in-process here, shared in phase 2)."""

    cap: int

    def acquire(self, holder: str, subscriptions: Iterable[Subscription]) -> list[Subscription]: ...

    def release(self, holder: str, subscriptions: Iterable[Subscription] | None = None) -> list[Subscription]: ...

    def holders(self, subscription: Subscription) -> frozenset[str]: ...

    def held(self) -> dict[Subscription, frozenset[str]]: ...


class SubscriptionRegistry:
    """The wanted set of one app key, per holder, capped at ``cap`` distinct subscriptions. Thread-safe."""

    def __init__(self, cap: int = SUBSCRIPTION_CAP) -> None:
        if cap < 0:
            raise ConfigurationError("the subscription cap must be >= 0")
        self.cap = cap
        self._lock = threading.Lock()
        self._holders: dict[Subscription, set[str]] = {}

    def acquire(self, holder: str, subscriptions: Iterable[Subscription]) -> list[Subscription]:
        """Hold ``subscriptions`` for ``holder``, all or none; return those nobody held before.

        Raises :class:`SubscriptionLimitError` (nothing changed) when the new ones would pass the cap.
        """
        wanted = list(dict.fromkeys(subscriptions))
        with self._lock:
            new = [s for s in wanted if s not in self._holders]
            if len(self._holders) + len(new) > self.cap:
                held = tuple(
                    f"{s} ({len(h)} holder{'s' if len(h) != 1 else ''})" for s, h in sorted(self._holders.items())
                )
                raise SubscriptionLimitError(
                    f"subscribing to {len(new)} more would pass KIS's cap of {self.cap} subscriptions per app key "
                    f"(every kind counts): {len(self._holders)} held. Release some first. Held: {', '.join(held)}",
                    cap=self.cap,
                    held=tuple(str(s) for s in sorted(self._holders)),
                )
            for subscription in wanted:
                self._holders.setdefault(subscription, set()).add(holder)
            return new

    def release(self, holder: str, subscriptions: Iterable[Subscription] | None = None) -> list[Subscription]:
        """Let go of ``subscriptions`` (all of the holder's if None); return those nobody holds now."""
        freed = []
        with self._lock:
            chosen = (
                [s for s, h in self._holders.items() if holder in h]
                if subscriptions is None
                else list(dict.fromkeys(subscriptions))
            )
            for subscription in chosen:
                holders = self._holders.get(subscription)
                if holders is None or holder not in holders:
                    continue
                holders.discard(holder)
                if not holders:
                    del self._holders[subscription]
                    freed.append(subscription)
        return freed

    def holders(self, subscription: Subscription) -> frozenset[str]:
        """Who holds ``subscription`` now."""
        with self._lock:
            return frozenset(self._holders.get(subscription, ()))

    def held(self) -> dict[Subscription, frozenset[str]]:
        """Every held subscription and its holders (a copy)."""
        with self._lock:
            return {s: frozenset(h) for s, h in self._holders.items()}
