"""What a store can say about itself and a token without issuing one: for tools and dashboards.

``kis-token``, a health endpoint or a dashboard ask the store these questions
through :meth:`~.storage.TokenStorage.status`, :meth:`~.storage.TokenStorage.describe`
and :meth:`~.storage.TokenStorage.health_check`, so they need no knowledge of the
backend.  Every value here is safe to print: tokens and app keys come masked,
locations redacted.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass
from typing import Any

from .credentials import Credentials
from .record import TokenRecord, format_kst, mask_token

#: How much of the credential fingerprint tools show: tells two secrets apart, reveals neither.
FINGERPRINT_CHARS = 12


class TokenState(enum.StrEnum):
    """Where a stored token stands.  ``STALE`` tokens still work at KIS; the library replaces them soon."""

    FRESH = "fresh"
    STALE = "stale"  # inside the refresh margin
    EXPIRED = "expired"
    MISSING = "missing"

    @property
    def usable(self) -> bool:
        """True while KIS still accepts the token."""
        return self in (TokenState.FRESH, TokenState.STALE)

    @classmethod
    def of(cls, record: TokenRecord | None, margin: float, now: float) -> TokenState:
        """The state of ``record`` at ``now`` with this refresh ``margin``."""
        if record is None:
            return cls.MISSING
        if record.is_valid(margin, now):
            return cls.FRESH
        return cls.STALE if record.seconds_left(now) > 0 else cls.EXPIRED


@dataclass(frozen=True)
class StorageDescription:
    """Which backend a store is and where it keeps tokens (a path, or a redacted URL)."""

    backend: str
    location: str


@dataclass(frozen=True)
class StorageHealth:
    """One probe of a store: reachable or not, the round trip timed, and what was seen.

    ``error`` says why a store is unreachable; ``detail`` what a reachable one
    holds.  Neither carries a password.
    """

    reachable: bool
    round_trip_ms: float | None
    location: str
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Alias of :attr:`reachable`, for code that reads health checks generically."""
        return self.reachable


@dataclass(frozen=True)
class TokenStatus:
    """What a store holds for one app key and secret, masked; from :meth:`TokenStorage.status`."""

    state: TokenState
    backend: str
    location: str
    app_key: str
    fingerprint: str
    token: str | None = None
    expires_at: float | None = None
    seconds_left: int | None = None
    issued_at: float | None = None

    @classmethod
    def of(
        cls,
        record: TokenRecord | None,
        credentials: Credentials,
        store: StorageDescription,
        margin: float,
        now: float | None = None,
    ) -> TokenStatus:
        """The status of ``record`` (None: nothing stored) for ``credentials`` in ``store``."""
        now = time.time() if now is None else now
        common: dict[str, Any] = {
            "backend": store.backend,
            "location": store.location,
            "app_key": mask_token(credentials.api_key),
            "fingerprint": credentials.fingerprint[:FINGERPRINT_CHARS],
            "state": TokenState.of(record, margin, now),
        }
        if record is None:
            return cls(**common)
        return cls(
            token=mask_token(record.access_token),
            expires_at=record.expires_at,
            seconds_left=int(record.seconds_left(now)),
            issued_at=record.issued_at,
            **common,
        )

    @property
    def present(self) -> bool:
        """True when any token (even an expired one) is stored."""
        return self.state is not TokenState.MISSING

    @property
    def usable(self) -> bool:
        """True while the stored token has not expired (stale ones are still accepted by KIS)."""
        return self.state.usable

    @property
    def expires_kst(self) -> str | None:
        """Expiry as KIS writes it (``YYYY-MM-DD HH:MM:SS``, KST)."""
        return format_kst(self.expires_at) if self.expires_at is not None else None

    @property
    def issued_kst(self) -> str | None:
        """When the token was issued, in KST."""
        return format_kst(self.issued_at) if self.issued_at is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``present``, ``usable`` and the KST times, for JSON output."""
        data = asdict(self)
        data["state"] = self.state.value
        data.update(present=self.present, usable=self.usable, expires_kst=self.expires_kst, issued_kst=self.issued_kst)
        return data


@dataclass(frozen=True)
class Refreshed:
    """The outcome of :meth:`TokenStorage.refresh`: the token now in use, and who issued it."""

    record: TokenRecord
    #: True when this call's ``issue`` made the token; False when a peer's refresh was adopted.
    issued_here: bool
