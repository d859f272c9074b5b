"""The immutable token record shared by every storage backend.

Expiry is computed once, from KIS's ``access_token_token_expired`` string read as
Korean wall-clock time, and kept as epoch seconds.  ``expires_in`` is ignored on
purpose: KIS sends 86400 even when it re-answers an older token with less life.

A token handed over in 0.6.x's dict shape (``save_token``, an old pickle) carries
its expiry as ``timestamp`` (epoch seconds), and that is its expiry, as in 0.6.1;
the text is read as KST only when there is no timestamp.  The text is kept as
given, so ``load_token`` returns what was saved.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import TokenIssueError

#: Korea has used UTC+9 with no daylight saving since 1988.  A fixed offset avoids
#: depending on a tz database, which slim containers and Windows often lack.
KST = timezone(timedelta(hours=9), "KST")

#: A token this close to its expiry counts as expired, so callers refresh ahead
#: of the boundary instead of failing on it.  Five minutes is far more than any
#: request takes and a tiny fraction of the 24 h lifetime.
DEFAULT_REFRESH_MARGIN = 300.0

EXPIRY_FORMAT = "%Y-%m-%d %H:%M:%S"

_FINGERPRINT_CONTEXT = b"korea-investment-stock/credential-fingerprint/v1\x00"


def parse_kst(text: str) -> float:
    """Epoch seconds for a KIS ``YYYY-MM-DD HH:MM:SS`` string in Korean time."""
    return datetime.strptime(text, EXPIRY_FORMAT).replace(tzinfo=KST).timestamp()


def format_kst(epoch: float) -> str:
    """The KIS expiry string for ``epoch``: the inverse of :func:`parse_kst`."""
    return datetime.fromtimestamp(epoch, KST).strftime(EXPIRY_FORMAT)


def credential_fingerprint(api_key: str, api_secret: str) -> str:
    """A keyed fingerprint of the key/secret pair, stored instead of the secret.

    It lets a store tell whether a token was issued for the caller's secret
    without ever keeping the secret at rest.  HMAC keyed by the secret means the
    fingerprint reveals nothing usable about it.
    """
    mac = hmac.new(api_secret.encode("utf-8"), _FINGERPRINT_CONTEXT + api_key.encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()


@functools.lru_cache(maxsize=256)
def key_id(api_key: str) -> str:
    """A short stable id for an app key, used to name file entries and Redis keys.

    Cached: every store read needs it, the file store once more per entry, and
    a process uses a handful of app keys (the cache holds no secret).
    """
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:32]


def token_digest(access_token: str) -> str:
    """A short digest naming a token that was found dead, so stores can refuse it without keeping it."""
    return hashlib.sha256(access_token.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One access token for one app key.

    ``expires_at`` and ``issued_at`` are epoch seconds; ``fingerprint`` is
    :func:`credential_fingerprint` of the pair that obtained the token.
    """

    access_token: str
    expires_at: float
    api_key: str
    fingerprint: str
    issued_at: float
    token_type: str = "Bearer"
    #: ``access_token_token_expired`` as a 0.6.x caller gave it ("" when ours): 0.6.1's tests
    #: wrote local time there.  Only handed back in that shape; the expiry is ``expires_at``.
    given_expiry_text: str = field(default="", compare=False)

    def __repr__(self) -> str:  # never show the bearer token itself
        return (
            f"TokenRecord(access_token='{mask_token(self.access_token)}', "
            f"expires='{self.expired_text}', api_key='{mask_token(self.api_key)}')"
        )

    @property
    def expired_text(self) -> str:
        """Expiry as KIS writes it (KST, no zone marker)."""
        return format_kst(self.expires_at)

    @property
    def legacy_expiry_text(self) -> str:
        """``access_token_token_expired`` in the 0.6.x shape: as given, else :attr:`expired_text`."""
        return self.given_expiry_text or self.expired_text

    @property
    def authorization(self) -> str:
        """The value of the ``authorization`` header: ``Bearer <jwt>``."""
        return f"Bearer {self.access_token}"

    def seconds_left(self, now: float | None = None) -> float:
        """Seconds until the hard expiry (negative once expired)."""
        return self.expires_at - (time.time() if now is None else now)

    def is_valid(self, margin: float = DEFAULT_REFRESH_MARGIN, now: float | None = None) -> bool:
        """True while the token has more than ``margin`` seconds left."""
        return self.seconds_left(now) > margin

    def matches(self, api_key: str, api_secret: str) -> bool:
        """True when this token was obtained with exactly this key and secret."""
        return self.belongs_to(api_key, credential_fingerprint(api_key, api_secret))

    def belongs_to(self, api_key: str, fingerprint: str) -> bool:
        """True when this token was obtained for ``api_key`` with the secret behind ``fingerprint``."""
        if self.api_key != api_key:
            return False
        # Bytes, not str: compare_digest raises TypeError for non-ASCII str, and a hostile
        # token file or Redis hash must read as "not ours", never crash the caller.
        stored = self.fingerprint.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(stored, fingerprint.encode("ascii"))

    @classmethod
    def from_issue_response(
        cls, body: Mapping[str, Any], api_key: str, api_secret: str, now: float | None = None
    ) -> TokenRecord:
        """Build a record from a tokenP success body; raise on a wrong shape."""
        return cls.from_issue_answer(body, api_key, credential_fingerprint(api_key, api_secret), now)

    @classmethod
    def from_issue_answer(
        cls, body: Mapping[str, Any], api_key: str, fingerprint: str, now: float | None = None
    ) -> TokenRecord:
        """:meth:`from_issue_response` for a caller that holds the fingerprint, not the secret."""
        token = body.get("access_token")
        expired = body.get("access_token_token_expired")
        if not isinstance(token, str) or not token or not isinstance(expired, str):
            raise TokenIssueError("tokenP answered 200 without access_token / access_token_token_expired")
        try:
            expires_at = parse_kst(expired)
        except ValueError:
            raise TokenIssueError(f"tokenP answered an unreadable expiry {expired!r}") from None
        token_type = body.get("token_type")
        return cls(
            access_token=token,
            expires_at=expires_at,
            api_key=api_key,
            fingerprint=fingerprint,
            issued_at=time.time() if now is None else now,
            token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        )

    def to_legacy_dict(self, api_secret: str) -> dict[str, Any]:
        """The 0.6.x dict shape; ``api_secret`` is the caller's, never read from disk.

        ``timestamp`` is the expiry in epoch seconds, as 0.6.x computed it.
        """
        return {
            "access_token": self.access_token,
            "access_token_token_expired": self.legacy_expiry_text,
            "timestamp": int(self.expires_at),
            "api_key": self.api_key,
            "api_secret": api_secret,
        }

    @classmethod
    def from_legacy_dict(cls, data: Mapping[str, Any], now: float | None = None) -> TokenRecord:
        """Read the 0.6.x dict shape (from ``save_token`` callers or a legacy file).

        Raises ``ValueError`` when a field is missing or of the wrong type.
        """
        token = data.get("access_token")
        api_key = data.get("api_key")
        if not isinstance(token, str) or not token:
            raise ValueError("access_token must be a non-empty string")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key must be a non-empty string")
        # The secret is read inline, never bound to a local (error reporters capture locals).
        if not isinstance(data.get("api_secret"), str) or not data.get("api_secret"):
            raise ValueError("api_secret must be a non-empty string")
        expires_at = _legacy_expiry(data)
        return cls(
            access_token=token,
            expires_at=expires_at,
            api_key=api_key,
            fingerprint=credential_fingerprint(api_key, data["api_secret"]),
            issued_at=time.time() if now is None else now,
            given_expiry_text=_given_text(data),
        )

    def to_json(self) -> dict[str, Any]:
        """The at-rest shape: no secret, only its fingerprint."""
        return {
            "access_token": self.access_token,
            "access_token_token_expired": self.legacy_expiry_text,
            "expires_at": self.expires_at,
            "issued_at": self.issued_at,
            "api_key": self.api_key,
            "fingerprint": self.fingerprint,
            "token_type": self.token_type,
        }

    @classmethod
    def from_json(cls, data: Any) -> TokenRecord:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on any wrong shape."""
        if not isinstance(data, Mapping):
            raise ValueError("token entry is not an object")
        fields: dict[str, Any] = {}
        for name in ("access_token", "api_key", "fingerprint"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
            try:
                value.encode("utf-8")  # JSON can carry lone surrogates; hashing them would crash later
            except UnicodeEncodeError:
                raise ValueError(f"{name} is not valid text") from None
            fields[name] = value
        for name in ("expires_at", "issued_at"):
            fields[name] = _epoch(data.get(name), name)
        token_type = data.get("token_type", "Bearer")
        return cls(
            token_type=token_type if isinstance(token_type, str) else "Bearer",
            given_expiry_text=_given_text(data),
            **fields,
        )


def _legacy_expiry(data: Mapping[str, Any]) -> float:
    """The expiry of a 0.6.x dict: its ``timestamp`` (0.6.1's rule), else its text read as KST."""
    try:
        return _epoch(data.get("timestamp"), "timestamp")
    except ValueError:
        pass
    expired = data.get("access_token_token_expired")
    if isinstance(expired, str):
        try:
            return parse_kst(expired)
        except ValueError:
            pass
    raise ValueError("neither timestamp nor access_token_token_expired gives an expiry")


def _given_text(data: Mapping[str, Any]) -> str:
    """``access_token_token_expired`` if it is short text that can be stored as is, else ""."""
    text = data.get("access_token_token_expired")
    if not isinstance(text, str) or len(text) > 64:
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON: not storable
        return ""
    return text


def _epoch(value: Any, name: str) -> float:
    """``value`` as epoch seconds, or ``ValueError`` unless it is a number a clock can show.

    Files and callers can carry numbers JSON allows but ``datetime`` does not
    (``1e20``, a 400-digit integer); those must fail here, as "no token", not
    later in ``repr`` or ``to_legacy_dict``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    try:
        epoch = float(value)
        if not math.isfinite(epoch):
            raise ValueError
        format_kst(epoch)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{name} must be a finite epoch a calendar can show") from None
    return epoch


def mask_token(value: str) -> str:
    """Show only enough of a token or key to tell two apart in logs."""
    if len(value) <= 12:
        return "***"
    return f"{value[:6]}...{value[-4:]}"
