"""TokenRecord: KST expiry, refresh margin, legacy shape, fingerprints, at-rest JSON."""

from __future__ import annotations

import calendar
import json
import math
import multiprocessing
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from korea_investment_stock.errors import TokenIssueError
from korea_investment_stock.token.record import (
    DEFAULT_REFRESH_MARGIN,
    TokenRecord,
    credential_fingerprint,
    format_kst,
    key_id,
    mask_token,
    parse_kst,
)

from .workers import API_KEY, API_SECRET, make_record, run_in_timezone

# "2025-02-05 13:39:00" in Seoul is 04:39:00 UTC the same day.
KST_TEXT = "2025-02-05 13:39:00"
UTC_EPOCH = calendar.timegm((2025, 2, 5, 4, 39, 0))
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0b2tlbiJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


# ---------------------------------------------------------------------------------------------- KST
def test_parse_kst_is_seoul_wall_clock():
    assert parse_kst(KST_TEXT) == UTC_EPOCH


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Seoul", "Pacific/Kiritimati"])
def test_parse_kst_ignores_the_process_time_zone(tz):
    # A fresh process whose TZ is switched with time.tzset before parsing.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(run_in_timezone, (tz, KST_TEXT)) == UTC_EPOCH


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_parse_kst_ignores_tz_in_this_process(monkeypatch, tz):
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        assert parse_kst(KST_TEXT) == UTC_EPOCH
        assert format_kst(UTC_EPOCH) == KST_TEXT
        record = TokenRecord.from_issue_response(
            {"access_token": TOKEN, "access_token_token_expired": KST_TEXT}, API_KEY, API_SECRET
        )
        assert record.expires_at == UTC_EPOCH
    finally:
        monkeypatch.undo()
        time.tzset()


@given(st.integers(min_value=0, max_value=4_102_444_800))  # 1970 .. 2100
def test_format_kst_round_trips(epoch):
    assert parse_kst(format_kst(epoch)) == epoch


@pytest.mark.parametrize(
    "text", ["2025-02-05T13:39:00", "2025-02-05", "", "13:39:00 2025-02-05", "2025-13-01 00:00:00"]
)
def test_parse_kst_rejects_other_formats(text):
    with pytest.raises(ValueError):
        parse_kst(text)


# ----------------------------------------------------------------------------------- tokenP answer
def test_expiry_comes_from_the_kst_string_not_expires_in():
    now = time.time()
    body = {
        "access_token": TOKEN,
        "access_token_token_expired": format_kst(now + 3600),  # an older token re-answered
        "token_type": "Bearer",
        "expires_in": 86400,
    }
    record = TokenRecord.from_issue_response(body, API_KEY, API_SECRET, now=now)
    assert 3598 <= record.seconds_left(now) <= 3600
    assert record.issued_at == now
    assert record.api_key == API_KEY
    assert record.access_token == TOKEN
    assert record.authorization == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"access_token": TOKEN},
        {"access_token_token_expired": KST_TEXT},
        {"access_token": "", "access_token_token_expired": KST_TEXT},
        {"access_token": 12, "access_token_token_expired": KST_TEXT},
        {"access_token": TOKEN, "access_token_token_expired": 1738730340},
        {"access_token": TOKEN, "access_token_token_expired": "tomorrow"},
    ],
)
def test_from_issue_response_rejects_bad_bodies(body):
    with pytest.raises(TokenIssueError):
        TokenRecord.from_issue_response(body, API_KEY, API_SECRET)


def test_token_type_defaults_to_bearer():
    body = {"access_token": TOKEN, "access_token_token_expired": KST_TEXT, "token_type": ""}
    assert TokenRecord.from_issue_response(body, API_KEY, API_SECRET).token_type == "Bearer"


# ---------------------------------------------------------------------------------- refresh margin
def test_default_margin_is_five_minutes_and_documented():
    assert DEFAULT_REFRESH_MARGIN == 300.0
    assert "margin" in (TokenRecord.is_valid.__doc__ or "")


@pytest.mark.parametrize(
    ("left", "margin", "valid"),
    [
        (86400, DEFAULT_REFRESH_MARGIN, True),
        (301, DEFAULT_REFRESH_MARGIN, True),
        (300, DEFAULT_REFRESH_MARGIN, False),
        (299, DEFAULT_REFRESH_MARGIN, False),
        (10, 0, True),
        (0, 0, False),
        (-5, 0, False),
        (3599, 3600, False),
        (3601, 3600, True),
    ],
)
def test_margin(left, margin, valid):
    now = 1_800_000_000.0
    record = TokenRecord(TOKEN, now + left, API_KEY, credential_fingerprint(API_KEY, API_SECRET), now)
    assert record.is_valid(margin, now=now) is valid
    assert record.seconds_left(now) == left


def test_default_margin_applies_without_arguments():
    assert make_record(lifetime=DEFAULT_REFRESH_MARGIN + 60).is_valid()
    assert not make_record(lifetime=DEFAULT_REFRESH_MARGIN - 60).is_valid()


# --------------------------------------------------------------------------------- legacy dict
def test_legacy_dict_shape_takes_the_secret_from_the_caller():
    record = TokenRecord.from_issue_response(
        {"access_token": TOKEN, "access_token_token_expired": KST_TEXT}, API_KEY, API_SECRET
    )
    legacy = record.to_legacy_dict("the-callers-secret")
    assert set(legacy) == {"access_token", "access_token_token_expired", "timestamp", "api_key", "api_secret"}
    assert legacy == {
        "access_token": TOKEN,
        "access_token_token_expired": KST_TEXT,
        "timestamp": UTC_EPOCH,
        "api_key": API_KEY,
        "api_secret": "the-callers-secret",
    }
    assert isinstance(legacy["timestamp"], int)


def test_legacy_dict_round_trips():
    record = make_record()
    back = TokenRecord.from_legacy_dict(record.to_legacy_dict(API_SECRET))
    assert back.access_token == record.access_token
    assert back.expires_at == int(record.expires_at)  # the KST string has whole seconds
    assert back.matches(API_KEY, API_SECRET)


def test_legacy_dict_falls_back_to_timestamp():
    data = {
        "access_token": TOKEN,
        "access_token_token_expired": "garbled",
        "timestamp": UTC_EPOCH,
        "api_key": API_KEY,
        "api_secret": API_SECRET,
    }
    assert TokenRecord.from_legacy_dict(data).expires_at == UTC_EPOCH


@pytest.mark.parametrize(
    "change",
    [
        {"access_token": ""},
        {"access_token": None},
        {"api_key": 5},
        {"api_secret": ""},
        {"access_token_token_expired": None, "timestamp": None},
        {"access_token_token_expired": "x", "timestamp": True},
        {"access_token_token_expired": "x", "timestamp": math.nan},
        {"access_token_token_expired": "x", "timestamp": "1738730340"},
    ],
)
def test_legacy_dict_rejects_wrong_fields(change):
    data = {
        "access_token": TOKEN,
        "access_token_token_expired": KST_TEXT,
        "timestamp": UTC_EPOCH,
        "api_key": API_KEY,
        "api_secret": API_SECRET,
    }
    data.update(change)
    with pytest.raises(ValueError):
        TokenRecord.from_legacy_dict(data)


# ----------------------------------------------------------------------------------- fingerprint
def test_fingerprint_matches_only_the_same_pair():
    record = make_record()
    assert record.matches(API_KEY, API_SECRET)
    assert not record.matches(API_KEY, API_SECRET + "x")
    assert not record.matches(API_KEY + "x", API_SECRET)
    assert not record.matches(API_KEY, "")


def test_fingerprint_is_deterministic_keyed_and_hides_the_secret():
    fp = credential_fingerprint(API_KEY, API_SECRET)
    assert fp == credential_fingerprint(API_KEY, API_SECRET)
    assert fp != credential_fingerprint(API_KEY, API_SECRET[:-1] + "y")
    assert fp != credential_fingerprint("other-key", API_SECRET)
    assert API_SECRET not in fp and API_SECRET[:16] not in fp
    assert len(fp) == 64


def test_key_id_is_stable_and_distinct():
    assert key_id("a") == key_id("a")
    assert key_id("a") != key_id("b")
    assert "a" * 36 not in key_id("a" * 36)


# ------------------------------------------------------------------------------------------ repr
def test_repr_hides_the_token_and_key():
    record = make_record(TOKEN)
    for text in (repr(record), str(record), f"{record}", str([record])):
        assert TOKEN not in text
        assert API_KEY not in text
        assert API_SECRET not in text
        assert TOKEN[6:-4] not in text
    assert "..." in repr(record)


@pytest.mark.parametrize("value", ["", "short", "123456789012"])
def test_mask_token_hides_short_values_entirely(value):
    assert mask_token(value) == "***"


# ---------------------------------------------------------------------------------------- JSON
def test_json_round_trip_keeps_no_secret():
    record = make_record()
    document = record.to_json()
    assert API_SECRET not in json.dumps(document)
    assert "api_secret" not in document
    assert TokenRecord.from_json(json.loads(json.dumps(document))) == record


_GOOD = make_record().to_json()
_NON_STRINGS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=3)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(""),
)
_NON_NUMBERS = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.lists(st.integers(), max_size=2),
)


@given(field=st.sampled_from(["access_token", "api_key", "fingerprint"]), value=_NON_STRINGS)
def test_from_json_rejects_non_string_fields(field, value):
    with pytest.raises(ValueError):
        TokenRecord.from_json({**_GOOD, field: value})


@given(field=st.sampled_from(["expires_at", "issued_at"]), value=_NON_NUMBERS)
def test_from_json_rejects_non_numbers(field, value):
    with pytest.raises(ValueError):
        TokenRecord.from_json({**_GOOD, field: value})


@pytest.mark.parametrize("missing", ["access_token", "api_key", "fingerprint", "expires_at", "issued_at"])
def test_from_json_rejects_missing_fields(missing):
    data = dict(_GOOD)
    del data[missing]
    with pytest.raises(ValueError):
        TokenRecord.from_json(data)


@pytest.mark.parametrize("value", [None, [], "x", 3, [_GOOD]])
def test_from_json_rejects_non_objects(value):
    with pytest.raises(ValueError):
        TokenRecord.from_json(value)


@pytest.mark.parametrize("value", [10**400, -(10**400), 1e20, -1e20, 1e300])
def test_from_json_rejects_absurd_epochs(value):
    # Numbers JSON can carry but no clock can: a damaged file must read as "no token", not crash later.
    with pytest.raises(ValueError):
        TokenRecord.from_json({**_GOOD, "expires_at": value})


@given(st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=True, allow_infinity=True))
def test_from_json_accepts_or_rejects_cleanly(value):
    try:
        record = TokenRecord.from_json({**_GOOD, "expires_at": value})
    except ValueError:
        return
    # Whatever is accepted must be usable everywhere a record is used.
    repr(record)
    record.to_legacy_dict(API_SECRET)
    record.is_valid()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(_GOOD)), _JSON, max_size=7))
def test_from_json_never_raises_anything_but_value_error(data):
    try:
        TokenRecord.from_json(data)
    except ValueError:
        pass


def test_record_is_immutable():
    record = make_record()
    with pytest.raises(AttributeError):
        record.access_token = "other"  # type: ignore[misc]
