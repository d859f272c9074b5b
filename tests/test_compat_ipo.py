"""0.6.1 user code for the IPO schedule (공모주 청약 일정), against the fake KIS over loopback HTTP.

Until the lead wires ``KoreaInvestment.fetch_ipo_schedule`` and the static
helpers, the call goes through ``ipo.fetch_ipo_schedule(client.request, ...)``
and the tests of the wired names skip; once wired, they run unchanged.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from korea_investment_stock import FileTokenStorage, KoreaInvestment
from korea_investment_stock import client as client_module
from korea_investment_stock.errors import KISAPIError, KoreaInvestmentError, RateLimitExceededError
from korea_investment_stock.market import ipo
from korea_investment_stock.testing import KST, FakeKIS
from korea_investment_stock.testing.market import IPO_FIELDS, IPO_OFFERINGS, IPO_PATH

ACCOUNT = "12345678-01"
WIDE = ("19000101", "29991231")
NOT_WIRED = "KoreaInvestment.{} is not wired yet (the lead adds it); this test runs once it is"


# -- plumbing -------------------------------------------------------------------------------


class Wire:
    """A real session that records every URL and header set it sent: what the fake received."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.sent: list[requests.PreparedRequest] = []
        self.session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.sent.append(response.request)

    def ipo_queries(self) -> list[dict[str, str]]:
        """The query of each IPO call, blank values kept (``SHT_CD=`` matters)."""
        found = []
        for prepared in self.sent:
            parts = urlsplit(prepared.url or "")
            if parts.path == IPO_PATH:
                found.append({k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()})
        return found


def pin_today(kis: FakeKIS, monkeypatch: pytest.MonkeyPatch) -> date:
    """Make the client's "today" the fake's KST date, away from midnight so both agree all test long."""
    now = datetime.fromtimestamp(kis.now(), KST)
    if now.hour == 23 and now.minute == 59:
        kis.advance(120)
    today = datetime.fromtimestamp(kis.now(), KST).date()
    monkeypatch.setattr(ipo, "_today", lambda: today)
    return today


def connect(kis: FakeKIS, tmp_path: Path, **kwargs: Any) -> KoreaInvestment:
    return KoreaInvestment(
        kis.app_key, kis.app_secret, ACCOUNT, token_storage=FileTokenStorage(tmp_path / "t"), base_url=kis.url, **kwargs
    )


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def client(fake_kis: FakeKIS, tmp_path: Path, wire: Wire) -> Iterator[KoreaInvestment]:
    with connect(fake_kis, tmp_path, session=wire.session) as c:
        yield c


@pytest.fixture
def today(fake_kis: FakeKIS, monkeypatch: pytest.MonkeyPatch) -> date:
    return pin_today(fake_kis, monkeypatch)


def fetch(client: KoreaInvestment, **kwargs: Any) -> dict[str, Any]:
    return ipo.fetch_ipo_schedule(client.request, mock=client.mock, **kwargs)


def ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


def symbols(answer: dict[str, Any]) -> list[str]:
    return [record["sht_cd"] for record in answer["output1"]]


@pytest.fixture(params=["module", "KoreaInvestment"])
def helper(request: pytest.FixtureRequest) -> Callable[[str], Callable[..., Any]]:
    """A helper by name: this module's function, or 0.6.1's static method on the class."""

    def get(name: str) -> Callable[..., Any]:
        if request.param == "module":
            return getattr(ipo, name)  # type: ignore[no-any-return]
        if not hasattr(KoreaInvestment, name):
            pytest.skip(NOT_WIRED.format(name))
        return getattr(KoreaInvestment, name)  # type: ignore[no-any-return]

    return get


@pytest.fixture
def on_day(monkeypatch: pytest.MonkeyPatch) -> Callable[[date], None]:
    return lambda day: monkeypatch.setattr(ipo, "_today", lambda: day)


# -- the call -------------------------------------------------------------------------------


def test_constants_are_kis_facts() -> None:
    assert ipo.IPO_PATH == "/uapi/domestic-stock/v1/ksdinfo/pub-offer" == IPO_PATH
    assert ipo.IPO_TR_ID == "HHKDB669108C0"


def test_default_range_is_today_to_today_plus_30_kst(client: KoreaInvestment, wire: Wire, today: date) -> None:
    answer = fetch(client)
    assert wire.ipo_queries() == [{"SHT_CD": "", "CTS": "", "F_DT": ymd(today), "T_DT": ymd(today + timedelta(30))}]
    headers = wire.sent[-1].headers
    assert headers["tr_id"] == "HHKDB669108C0"
    assert headers["custtype"] == "P"
    # The fake applied those dates: -2..-1 (ended yesterday) and 31..32 are out; -1..1, 0..1 and 30..31 are in.
    assert symbols(answer) == ["900150", "900160", "900170", "900180", "900190", "900200"]


def test_today_is_the_kst_calendar_day() -> None:
    for _ in range(3):  # a second try covers crossing KST midnight between the two reads
        if ipo._today() == datetime.now(KST).date():
            return
    pytest.fail("ipo._today() is not the KST date")


def test_none_and_empty_string_mean_the_default(client: KoreaInvestment, wire: Wire, today: date) -> None:
    fetch(client, from_date=None, to_date="")
    fetch(client, from_date="", to_date=None, symbol=None)
    expected = {"SHT_CD": "", "CTS": "", "F_DT": ymd(today), "T_DT": ymd(today + timedelta(30))}
    assert wire.ipo_queries() == [expected, expected]


def test_explicit_range_selects_overlapping_periods(client: KoreaInvestment, wire: Wire, today: date) -> None:
    answer = fetch(client, from_date=ymd(today - timedelta(2)), to_date=ymd(today - timedelta(1)))
    assert wire.ipo_queries()[0]["F_DT"] == ymd(today - timedelta(2))
    assert wire.ipo_queries()[0]["T_DT"] == ymd(today - timedelta(1))
    assert symbols(answer) == ["900140", "900150"]  # -2..-1 and -1..1 overlap; -8..-7 does not
    one_day = fetch(client, from_date=ymd(today), to_date=ymd(today))  # from == to is a valid range
    assert symbols(one_day) == ["900150", "900160"]


def test_return_shape_is_kis_answer_as_is(client: KoreaInvestment, today: date) -> None:
    answer = fetch(client, from_date=WIDE[0], to_date=WIDE[1])
    assert isinstance(answer, dict)
    assert answer["rt_cd"] == "0"
    assert answer["msg_cd"] == "MCA00000"
    assert isinstance(answer["msg1"], str)
    records = answer["output1"]
    assert isinstance(records, list)
    assert len(records) == len(IPO_OFFERINGS) == 12
    for record in records:
        assert isinstance(record, dict)
        assert tuple(record) == IPO_FIELDS
        assert len(IPO_FIELDS) == 13
        assert all(isinstance(value, str) and value for value in record.values())
        start, end = ipo.parse_ipo_date_range(record["subscr_dt"])
        assert start is not None and end is not None and start <= end
        assert record["fix_subscr_pri"].isdigit()
        assert len(record["record_date"]) == 8
    statuses = {ipo.get_ipo_status(record["subscr_dt"]) for record in records}
    assert statuses == {"예정", "진행중", "마감"}
    names = [record["isin_name"] for record in records]
    assert all(any("가" <= ch <= "힣" for ch in name) for name in names)


def test_symbol_filter(client: KoreaInvestment, wire: Wire, today: date) -> None:
    answer = fetch(client, from_date=WIDE[0], to_date=WIDE[1], symbol="900180")
    assert wire.ipo_queries()[0]["SHT_CD"] == "900180"
    assert symbols(answer) == ["900180"]
    assert answer["output1"][0]["isin_name"] == "아람소프트"
    # Known symbol, range that misses its period; and an unknown symbol: an empty list, still success.
    for kwargs in ({"symbol": "900180", "to_date": ymd(today + timedelta(6))}, {"symbol": "123456"}):
        empty = fetch(client, **kwargs)
        assert empty["rt_cd"] == "0"
        assert empty["output1"] == []


def test_the_fake_is_deterministic(client: KoreaInvestment, today: date) -> None:
    assert fetch(client, from_date=WIDE[0], to_date=WIDE[1]) == fetch(client, from_date=WIDE[0], to_date=WIDE[1])


# -- ValueError before any HTTP ---------------------------------------------------------------------


def test_mock_client_raises_before_any_http(fake_kis: FakeKIS, tmp_path: Path, wire: Wire) -> None:
    with connect(fake_kis, tmp_path, mock=True, session=wire.session) as mock_client:
        assert mock_client.mock is True
        calls_after_construction = len(wire.sent)
        with pytest.raises(ValueError, match="mock") as caught:
            fetch(mock_client)
        with pytest.raises(ValueError, match="mock"):  # the mock check comes before the date checks
            fetch(mock_client, from_date="garbage")
    assert isinstance(caught.value, KoreaInvestmentError)
    assert len(wire.sent) == calls_after_construction
    assert fake_kis.stats.rest_requests == 0


BAD_DATES = [
    "2024-01-15",  # dashes
    "20241301",  # month 13
    "20240230",  # February 30
    "2024011",  # 7 digits
    "202401150",  # 9 digits
    "2024o115",  # a letter
    " 20240115",  # padding
    "２０２４０１１５",  # full-width digits: isdigit() says yes, KIS says no
    20240115,  # an int, not a string
]


@pytest.mark.parametrize("side", ["from_date", "to_date"])
@pytest.mark.parametrize("bad", BAD_DATES, ids=repr)
def test_malformed_dates_raise_before_any_http(
    client: KoreaInvestment, fake_kis: FakeKIS, side: str, bad: object
) -> None:
    fake_kis.reset_stats()
    with pytest.raises(ValueError, match=side):
        fetch(client, **{side: bad})
    assert fake_kis.stats.rest_requests == 0


def test_reversed_range_raises_before_any_http(client: KoreaInvestment, fake_kis: FakeKIS, today: date) -> None:
    fake_kis.reset_stats()
    with pytest.raises(ValueError, match="after"):
        fetch(client, from_date="20240201", to_date="20240131")
    # Each default applies on its own (0.6.1): a from_date past today + 30 is reversed against it.
    with pytest.raises(ValueError, match="after"):
        fetch(client, from_date=ymd(today + timedelta(31)))
    with pytest.raises(ValueError, match="after"):
        fetch(client, to_date=ymd(today - timedelta(1)))
    assert fake_kis.stats.rest_requests == 0


def test_non_string_symbol_raises(client: KoreaInvestment) -> None:
    with pytest.raises(ValueError, match="symbol"):
        fetch(client, symbol=900180)


# -- error answers and REST faults on this endpoint ---------------------------------------------------


def test_fake_refuses_the_endpoint_as_the_mock_environment(fake_kis: FakeKIS, client: KoreaInvestment) -> None:
    fake_kis.configure(environment="mock")
    answer = fetch(client)  # a real-account client pointed at a mock host: KIS's error comes back as is
    assert answer == {"rt_cd": "1", "msg_cd": "MCA00124", "msg1": "해당 서비스를 찾을수 없습니다."}
    other = client.fetch_domestic_price("J", "005930")  # the mock host serves quotations
    assert other["rt_cd"] == "0"
    assert fake_kis.stats.rest_rejected == {"MCA00124": 1}
    fake_kis.configure(environment="real")
    assert fetch(client)["rt_cd"] == "0"


def test_mock_environment_error_envelope_over_http(fake_kis: FakeKIS, client: KoreaInvestment) -> None:
    fake_kis.configure(environment="mock")
    response = requests.get(
        fake_kis.url + IPO_PATH,
        params={"SHT_CD": "", "CTS": "", "F_DT": "20240101", "T_DT": "20240131"},
        headers={"authorization": client.access_token, "appkey": fake_kis.app_key, "tr_id": "HHKDB669108C0"},
        timeout=5,
    )
    assert response.status_code == 500
    assert response.json() == {"rt_cd": "1", "msg_cd": "MCA00124", "msg1": "해당 서비스를 찾을수 없습니다."}
    with pytest.raises(ValueError, match="environment"):
        fake_kis.configure(environment="paper")


def test_fake_rejects_bad_query_dates(client: KoreaInvestment) -> None:
    # Past our own checks, through the raw REST path: the fake answers an error envelope, not a crash.
    params = {"SHT_CD": "", "CTS": "", "F_DT": "2024-01-01", "T_DT": "20240131"}
    answer = client.request("GET", IPO_PATH, "HHKDB669108C0", params=params)
    assert answer["rt_cd"] == "1"
    assert answer["msg_cd"] == "OPSQ2002"
    missing = client.request("GET", IPO_PATH, "HHKDB669108C0", params={"F_DT": "20240101", "T_DT": "20240131"})
    assert missing["msg_cd"] == "OPSQ2001"


class VirtualTime:
    """Stands in for ``client.time``: each backoff sleep moves the fake's clock instead of waiting."""

    def __init__(self, kis: FakeKIS, step: float) -> None:
        self.kis = kis
        self.step = step
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if self.step:
            self.kis.advance(self.step)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_egw00201_on_this_endpoint_is_retried(
    fake_kis_factory: Callable[..., FakeKIS], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kis = fake_kis_factory(rest_rate_limit=1)
    pin_today(kis, monkeypatch)
    virtual = VirtualTime(kis, step=1.0)  # one virtual second per backoff: the sliding second has passed
    monkeypatch.setattr(client_module, "time", virtual)
    with connect(kis, tmp_path) as c:
        assert fetch(c)["rt_cd"] == "0"
        answer = fetch(c)  # same virtual second: HTTP 500 EGW00201, then a retry that gets through
    assert answer["rt_cd"] == "0"
    assert len(answer["output1"]) == 6
    assert len(virtual.pauses) == 1
    assert kis.stats.rest_rejected == {"EGW00201": 1}
    assert kis.stats.rest_requests == 3


def test_egw00201_on_this_endpoint_gives_up_after_the_retries(
    fake_kis_factory: Callable[..., FakeKIS], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kis = fake_kis_factory(rest_rate_limit=1)
    virtual = VirtualTime(kis, step=0.0)  # time stands still: the limit never clears
    monkeypatch.setattr(client_module, "time", virtual)
    with connect(kis, tmp_path, rate_limit_retries=2) as c:
        fetch(c)
        with pytest.raises(RateLimitExceededError) as caught:
            fetch(c)
    assert isinstance(caught.value, KISAPIError)
    assert caught.value.status == 500
    assert len(virtual.pauses) == 2
    assert kis.stats.rest_rejected == {"EGW00201": 3}


@pytest.mark.parametrize("kill", ["revoke_all", "expire_all"])
def test_dead_token_on_this_endpoint_is_replaced_once(
    fake_kis: FakeKIS, client: KoreaInvestment, today: date, kill: str
) -> None:
    getattr(fake_kis, kill)()
    fake_kis.advance(61)  # past KIS's one-issuance-per-minute window
    answer = fetch(client)
    assert answer["rt_cd"] == "0"
    assert len(answer["output1"]) == 6
    assert fake_kis.stats.tokens_issued == 2
    code = "EGW00121" if kill == "revoke_all" else "EGW00123"
    assert fake_kis.stats.rest_rejected == {code: 1}


# -- the helpers ------------------------------------------------------------------------------------


def test_parse_ipo_date_range(helper: Callable[[str], Callable[..., Any]]) -> None:
    parse = helper("parse_ipo_date_range")
    start, end = parse("2024.01.15~2024.01.16")
    assert (start, end) == (datetime(2024, 1, 15), datetime(2024, 1, 16))
    assert start.tzinfo is None and end.tzinfo is None  # naive, as 0.6.1's strptime results
    assert parse(" 2024.12.31 ~ 2025.01.02 ") == (datetime(2024, 12, 31), datetime(2025, 1, 2))
    assert parse("2024.01.16~2024.01.15") == (datetime(2024, 1, 16), datetime(2024, 1, 15))  # order not checked


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "garbage",
        "~",
        "2024.01.15",
        "2024.01.15~",
        "~2024.01.16",
        "2024-01-15~2024-01-16",
        "20240115~20240116",
        "2024.1.5~2024.1.6",
        "2024.13.01~2024.13.02",
        "2024.02.30~2024.03.01",
        "2024.01.15~2024.01.16~2024.01.17",
        "2024.01.15~2024.01.16 extra",
        20240115,
    ],
    ids=repr,
)
def test_unparsable_ranges(helper: Callable[[str], Callable[..., Any]], text: object) -> None:
    assert helper("parse_ipo_date_range")(text) == (None, None)
    assert helper("calculate_ipo_d_day")(text) == -999
    assert helper("get_ipo_status")(text) == "알수없음"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240115", "2024-01-15"),
        ("2024.01.15", "2024-01-15"),
        ("2024.01.15~2024.01.16", "2024-01-15~2024-01-16"),
        ("2024-01-15", "2024-01-15"),
        ("2024011", "2024011"),
        ("202401150", "202401150"),
        ("abc", "abc"),
        ("", ""),
        ("２０２４０１１５", "２０２４０１１５"),
        (None, None),
    ],
    ids=repr,
)
def test_format_ipo_date(helper: Callable[[str], Callable[..., Any]], text: str | None, expected: str | None) -> None:
    assert helper("format_ipo_date")(text) == expected


@pytest.mark.parametrize(
    ("subscr_dt", "d_day"),
    [
        ("2024.01.20~2024.01.21", 5),
        ("2024.01.16~2024.01.17", 1),
        ("2024.01.15~2024.01.16", 0),  # the start day is D-0, not 0.6.1's -1
        ("2024.01.14~2024.01.16", -1),
        ("2024.01.10~2024.01.11", -5),
        ("2025.01.15~2025.01.16", 366),  # 2024 is a leap year
        ("2023.12.31~2024.01.02", -15),
    ],
)
def test_calculate_ipo_d_day(
    helper: Callable[[str], Callable[..., Any]], on_day: Callable[[date], None], subscr_dt: str, d_day: int
) -> None:
    on_day(date(2024, 1, 15))
    assert helper("calculate_ipo_d_day")(subscr_dt) == d_day


@pytest.mark.parametrize(
    ("subscr_dt", "status"),
    [
        ("2024.02.01~2024.02.02", "예정"),
        ("2024.01.16~2024.01.17", "예정"),  # starts tomorrow
        ("2024.01.15~2024.01.16", "진행중"),  # the start day
        ("2024.01.14~2024.01.16", "진행중"),
        ("2024.01.14~2024.01.15", "진행중"),  # the end day is still open
        ("2024.01.15~2024.01.15", "진행중"),  # a one-day subscription
        ("2024.01.13~2024.01.14", "마감"),  # ended yesterday
        ("2023.12.01~2023.12.02", "마감"),
    ],
)
def test_get_ipo_status(
    helper: Callable[[str], Callable[..., Any]], on_day: Callable[[date], None], subscr_dt: str, status: str
) -> None:
    on_day(date(2024, 1, 15))
    assert helper("get_ipo_status")(subscr_dt) == status


def test_helpers_follow_today(helper: Callable[[str], Callable[..., Any]], on_day: Callable[[date], None]) -> None:
    period = "2024.01.15~2024.01.16"
    seen = []
    for day in (date(2024, 1, 14), date(2024, 1, 15), date(2024, 1, 16), date(2024, 1, 17)):
        on_day(day)
        seen.append((helper("get_ipo_status")(period), helper("calculate_ipo_d_day")(period)))
    assert seen == [("예정", 1), ("진행중", 0), ("진행중", -1), ("마감", -2)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234567", "1,234,567"),
        ("0", "0"),
        ("999", "999"),
        ("1000", "1,000"),
        ("-1234", "-1,234"),
        ("1234.5", "1,234.5"),
        ("-1234567.125", "-1,234,567.125"),
        ("1234.50", "1,234.50"),  # decimals verbatim, no float rounding
        ("0001234", "1,234"),  # leading zeros go, as with 0.6.1's int()
        ("+1234", "1,234"),
        ("-0", "0"),
        ("-0.5", "-0.5"),
        (" 1234 ", "1,234"),
        ("", ""),
        ("abc", "abc"),
        ("1,234", "1,234"),
        ("12a", "12a"),
        ("1e5", "1e5"),
        ("1.", "1."),
        (".5", ".5"),
        ("--1", "--1"),
        ("nan", "nan"),
        (None, None),
        (1234567, "1,234,567"),
    ],
    ids=repr,
)
def test_format_number(helper: Callable[[str], Callable[..., Any]], text: object, expected: object) -> None:
    assert helper("format_number")(text) == expected


def _grouped(digits: str) -> str:
    """The digits grouped in threes from the right, by hand (no int conversion to hit a limit)."""
    groups = []
    while digits:
        digits, group = digits[:-3], digits[-3:]
        groups.append(group)
    return ",".join(reversed(groups))


@pytest.mark.parametrize("length", [4300, 4301, 5000, 100_000])
def test_format_number_past_the_int_string_limit(helper: Callable[[str], Callable[..., Any]], length: int) -> None:
    """Python refuses int() on more than 4,300 digits (sys.int_info.default_max_str_digits):
    a long digit string is still a number to group, not a ValueError."""
    digits = "9" + "0123456789" * (length // 10)
    digits = digits[:length]
    format_number = helper("format_number")
    assert format_number(digits) == _grouped(digits)
    assert format_number("-000" + digits + ".50") == "-" + _grouped(digits) + ".50"
    assert format_number("+" + digits) == _grouped(digits)
    assert format_number("-" + "0" * length + ".000") == "0.000"
    assert format_number(digits + "x") == digits + "x"


@given(sign=st.sampled_from(["", "+", "-"]), whole=st.from_regex(r"[0-9]{1,40}", fullmatch=True))
def test_grouping_as_text_agrees_with_int_formatting(sign: str, whole: str) -> None:
    """Below the limit the text grouping gives exactly 0.6.1's ``"{:,}".format(int(...))``."""
    expected = f"{int(sign + whole):,}"
    assert ipo.format_number(sign + whole) == expected


# -- the client's 0.6.1 method, once wired ------------------------------------------------------------


def wired(name: str) -> None:
    if not hasattr(KoreaInvestment, name):
        pytest.skip(NOT_WIRED.format(name))


def test_client_method_defaults_and_positional_arguments(client: KoreaInvestment, wire: Wire, today: date) -> None:
    wired("fetch_ipo_schedule")
    default = client.fetch_ipo_schedule()  # type: ignore[attr-defined, unused-ignore]
    assert symbols(default) == ["900150", "900160", "900170", "900180", "900190", "900200"]
    one = client.fetch_ipo_schedule(WIDE[0], WIDE[1], "900110")  # type: ignore[attr-defined, unused-ignore]
    assert symbols(one) == ["900110"]
    assert wire.ipo_queries() == [
        {"SHT_CD": "", "CTS": "", "F_DT": ymd(today), "T_DT": ymd(today + timedelta(30))},
        {"SHT_CD": "900110", "CTS": "", "F_DT": WIDE[0], "T_DT": WIDE[1]},
    ]
    with pytest.raises(ValueError):
        client.fetch_ipo_schedule(from_date="2024-01-15")  # type: ignore[attr-defined, unused-ignore]
    with pytest.raises(ValueError):
        client.fetch_ipo_schedule(from_date="20240201", to_date="20240131")  # type: ignore[attr-defined, unused-ignore]


def test_client_method_refuses_a_mock_client(fake_kis: FakeKIS, tmp_path: Path) -> None:
    wired("fetch_ipo_schedule")
    with connect(fake_kis, tmp_path, mock=True) as mock_client, pytest.raises(ValueError, match="mock"):
        mock_client.fetch_ipo_schedule()  # type: ignore[attr-defined, unused-ignore]
    assert fake_kis.stats.rest_requests == 0


def test_helpers_are_static_methods_on_the_client(client: KoreaInvestment) -> None:
    for name in ("parse_ipo_date_range", "format_ipo_date", "calculate_ipo_d_day", "get_ipo_status", "format_number"):
        wired(name)
        assert isinstance(inspect.getattr_static(KoreaInvestment, name), staticmethod)
    assert client.format_number("1234567") == "1,234,567"  # type: ignore[attr-defined, unused-ignore]
