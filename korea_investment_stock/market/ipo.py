"""0.6.1's IPO schedule (공모주 청약 일정): the KIS call and its five display helpers.

The call takes the client's ``request`` callable rather than the client, so it
shares the one REST path (token handling, ``EGW00201`` retries) without this
module importing the client.  "Today" is the KST calendar day (a fixed UTC+9
offset, as everywhere in this library) and comes from :func:`_today`, so tests
can pin it.  The helpers compare calendar dates, not datetimes: 0.6.1 compared
``datetime.now()`` with midnight, which made the start day count as "-1 days"
and the end day as already closed.

Datetimes from :func:`parse_ipo_date_range` are naive midnights, exactly what
0.6.1's ``datetime.strptime`` returned; they mean KST calendar days.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any, Protocol, overload

from ..errors import ConfigurationError
from ..token.record import KST

__all__ = [
    "DEFAULT_DAYS",
    "IPO_PATH",
    "IPO_TR_ID",
    "calculate_ipo_d_day",
    "fetch_ipo_schedule",
    "format_ipo_date",
    "format_number",
    "get_ipo_status",
    "parse_ipo_date_range",
]

IPO_PATH = "/uapi/domestic-stock/v1/ksdinfo/pub-offer"
IPO_TR_ID = "HHKDB669108C0"
#: ``to_date`` defaults to today plus this many days (0.6.1's window).
DEFAULT_DAYS = 30
#: :func:`calculate_ipo_d_day`'s answer when there is no parsable range (0.6.1's sentinel).
NO_D_DAY = -999

STATUS_UPCOMING = "예정"
STATUS_OPEN = "진행중"
STATUS_CLOSED = "마감"
STATUS_UNKNOWN = "알수없음"

_DATE_FORMAT = "%Y%m%d"
_RANGE = re.compile(r"(\d{4}\.\d{2}\.\d{2})\s*~\s*(\d{4}\.\d{2}\.\d{2})", re.ASCII)
_NUMBER = re.compile(r"([+-]?)(\d+)(\.\d+)?", re.ASCII)


class RequestFn(Protocol):
    """The signature of :meth:`KoreaInvestment.request`."""

    def __call__(
        self,
        method: str,
        path: str,
        tr_id: str,
        *,
        params: dict[str, str] | None = ...,
        body: dict[str, Any] | None = ...,
        tr_cont: str = ...,
    ) -> dict[str, Any]: ...


def _today() -> date:
    """Today's KST calendar date; the one place "now" enters this module (tests patch it)."""
    return datetime.now(KST).date()


def _query_date(name: str, value: object, default: date) -> str:
    """``value`` checked as a real ``YYYYMMDD`` date, or ``default`` when None or empty (as 0.6.1)."""
    if value is None or value == "":
        return default.strftime(_DATE_FORMAT)
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a YYYYMMDD string, got {type(value).__name__}")
    if len(value) != 8 or not (value.isascii() and value.isdigit()):
        raise ConfigurationError(f"{name} must be YYYYMMDD (8 digits, e.g. 20240115), got {value!r}")
    try:
        datetime.strptime(value, _DATE_FORMAT)
    except ValueError:
        raise ConfigurationError(f"{name} is not a calendar date: {value!r}") from None
    return value


def fetch_ipo_schedule(
    request: RequestFn,
    *,
    mock: bool,
    from_date: str | None = None,
    to_date: str | None = None,
    symbol: str = "",
) -> dict[str, Any]:
    """The IPO subscriptions overlapping ``from_date``..``to_date``; KIS's decoded answer as is.

    Defaults are today and today + 30 days (KST).  Each default applies on its
    own, as in 0.6.1, so a ``from_date`` past the default ``to_date`` is a
    reversed range.  ``symbol`` (empty for all) narrows to one stock.  An
    ``rt_cd != "0"`` answer is returned, not raised.

    Raises:
        ConfigurationError: (a ``ValueError``) for a mock client, checked before
            any HTTP call since KIS has no mock version of this service; for a
            date that is not a real ``YYYYMMDD`` date; for ``from_date > to_date``.
    """
    if mock:
        raise ConfigurationError(
            "the IPO schedule (공모주 청약 일정) is a real-account service: KIS has no mock (모의투자) endpoint for it"
        )
    today = _today()
    first = _query_date("from_date", from_date, today)
    last = _query_date("to_date", to_date, today + timedelta(days=DEFAULT_DAYS))
    if first > last:  # YYYYMMDD strings order like the dates they name
        raise ConfigurationError(f"from_date {first} is after to_date {last}")
    if symbol is None:  # 0.6.1 callers sometimes pass None for "all"
        symbol = ""
    if not isinstance(symbol, str):
        raise ConfigurationError(f"symbol must be a string (empty for all), got {type(symbol).__name__}")
    params = {"SHT_CD": symbol, "CTS": "", "F_DT": first, "T_DT": last}
    return request("GET", IPO_PATH, IPO_TR_ID, params=params)


def parse_ipo_date_range(range_str: str | None) -> tuple[datetime | None, datetime | None]:
    """``"2024.01.15~2024.01.16"`` as two naive midnight datetimes; ``(None, None)`` if unparsable.

    Anything but two real ``YYYY.MM.DD`` dates joined by ``~`` (spaces around
    it allowed) is unparsable: ``None``, empty, garbage, one side only.  The
    order of the two dates is not checked, as in 0.6.1.
    """
    if not isinstance(range_str, str):
        return (None, None)
    match = _RANGE.fullmatch(range_str.strip())
    if match is None:
        return (None, None)
    try:
        return (datetime.strptime(match[1], "%Y.%m.%d"), datetime.strptime(match[2], "%Y.%m.%d"))
    except ValueError:  # 2024.02.30 and the like
        return (None, None)


@overload
def format_ipo_date(date_str: str) -> str: ...
@overload
def format_ipo_date(date_str: None) -> None: ...
def format_ipo_date(date_str: str | None) -> str | None:
    """``YYYYMMDD`` → ``YYYY-MM-DD``; dots become dashes; anything else comes back unchanged.

    Purely textual, as in 0.6.1: the date is not validated.
    """
    if not isinstance(date_str, str):
        return date_str
    if len(date_str) == 8 and date_str.isascii() and date_str.isdigit():
        return f"{date_str[:4]}-{date_str[4:6]}-{date_str[6:]}"
    return date_str.replace(".", "-")


def calculate_ipo_d_day(ipo_date_range: str | None) -> int:
    """Days from today to the subscription start: positive ahead, 0 on the day, negative after.

    ``-999`` when there is no parsable range.
    """
    start, _end = parse_ipo_date_range(ipo_date_range)
    if start is None:
        return NO_D_DAY
    return (start.date() - _today()).days


def get_ipo_status(subscr_dt: str | None) -> str:
    """``"예정"`` before the start day, ``"진행중"`` from start to end day inclusive, ``"마감"`` after.

    ``"알수없음"`` when the range is unparsable.
    """
    start, end = parse_ipo_date_range(subscr_dt)
    if start is None or end is None:
        return STATUS_UNKNOWN
    today = _today()
    if today < start.date():
        return STATUS_UPCOMING
    if today <= end.date():
        return STATUS_OPEN
    return STATUS_CLOSED


@overload
def format_number(num_str: str | int) -> str: ...
@overload
def format_number(num_str: None) -> None: ...
def format_number(num_str: str | int | None) -> str | None:
    """``"1234567"`` → ``"1,234,567"``; anything that is not a plain number comes back unchanged.

    KIS sends numbers as strings.  A sign and decimals are kept (``"-1234.50"``
    → ``"-1,234.50"``: the decimals verbatim, no float rounding); leading zeros
    and ``+`` go, as with 0.6.1's ``int()``.  Exponents, commas and
    underscores count as not a number.

    The digits are grouped as text, never converted to ``int``: Python refuses
    ``int()`` on more than 4,300 digits (``sys.get_int_max_str_digits()``), and a
    long digit string is still a number to format, not a ``ValueError``.
    """
    if isinstance(num_str, int):  # 0.6.1 ran int() on whatever it got
        return f"{num_str:,}"
    if not isinstance(num_str, str):
        return num_str
    match = _NUMBER.fullmatch(num_str.strip())
    if match is None:
        return num_str
    sign, whole, fraction = match[1], match[2].lstrip("0") or "0", match[3] or ""
    negative = sign == "-" and (whole != "0" or fraction.strip(".0") != "")
    return ("-" if negative else "") + _group_thousands(whole) + fraction


def _group_thousands(digits: str) -> str:
    """``"1234567"`` → ``"1,234,567"``: what ``f"{int(digits):,}"`` gives, for any length."""
    head = len(digits) % 3 or 3
    return ",".join([digits[:head], *(digits[at : at + 3] for at in range(head, len(digits), 3))])
