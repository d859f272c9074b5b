"""KIS's strings turned into typed values: ``Decimal`` prices, ``int`` quantities, KST times.

KIS sends every number as a string and every time as KST wall clock without a
zone; a blank field means "none".  One place decides how each is read, so the
result types never disagree between endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import ConfigurationError
from ..token.record import KST

#: ``KST`` is the token room's, re-exported: one Korea Standard Time for the whole library.
__all__ = ["KST", "as_date", "decimal", "kst_datetime", "kst_midnight", "kst_today", "quantity", "text", "ymd"]


def text(row: Mapping[str, Any], *names: str) -> str:
    """The first non-blank of ``names`` in ``row`` (KIS spells keys upper or lower case), else ``""``."""
    for name in names:
        for key in (name, name.upper(), name.lower()):
            value = row.get(key)
            if value is not None and str(value).strip():
                return str(value).strip()
    return ""


def decimal(row: Mapping[str, Any], *names: str) -> Decimal:
    """A number field as ``Decimal``; blank is zero.  A field that is not a number raises ``ValueError``."""
    raw = text(row, *names)
    if not raw:
        return Decimal(0)
    try:
        return Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"KIS field {names[0]} is not a number: {raw!r}") from None


def quantity(row: Mapping[str, Any], *names: str) -> int:
    """A quantity field as ``int`` (KIS sometimes writes ``"10.000"``)."""
    return int(decimal(row, *names))


def kst_datetime(day: str, clock: str = "") -> datetime | None:
    """``YYYYMMDD`` and ``HHMMSS`` in KST as an aware ``datetime``; ``None`` when blank or not a time.

    Lenient on purpose: these stamps describe an order KIS already holds, and a
    malformed one must cost the timestamp, never the order (or a whole list).
    """
    day = day.strip()
    if not day:
        return None
    try:
        parsed = datetime.strptime(day[:8], "%Y%m%d").replace(tzinfo=KST)
        clock = clock.strip()
        if clock:
            clock = clock.zfill(6)[:6]
            parsed = parsed.replace(hour=int(clock[0:2]), minute=int(clock[2:4]), second=int(clock[4:6]))
    except ValueError:
        return None
    return parsed


def kst_today() -> date:
    """Today's date in Korea (the trading day KIS counts in)."""
    return datetime.now(KST).date()


def as_date(name: str, value: date | datetime | str | None, default: date) -> date:
    """A caller's date: a ``date``, a ``datetime`` (its KST date), ``YYYYMMDD`` or ``YYYY-MM-DD``; None: ``default``."""
    if value is None:
        return default
    if isinstance(value, datetime):
        return value.astimezone(KST).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        cleaned = value.strip().replace("-", "")
        try:
            return datetime.strptime(cleaned, "%Y%m%d").date()
        except ValueError:
            pass
    raise ConfigurationError(f"{name} must be a date, a datetime or 'YYYYMMDD', got {value!r}")


def ymd(day: date) -> str:
    """A date as KIS writes it: ``YYYYMMDD``."""
    return day.strftime("%Y%m%d")


def kst_midnight(day: date) -> datetime:
    """The start of ``day`` in KST."""
    return datetime.combine(day, time(0), tzinfo=KST)
