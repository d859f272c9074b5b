"""0.6.0-era pickle token files: honoured, migrated to JSON, and never trusted."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
import time
from pathlib import Path

import pytest

from korea_investment_stock import FileTokenStorage, KoreaInvestment
from korea_investment_stock.token.legacy import load_plain_pickle, looks_like_pickle
from korea_investment_stock.token.record import format_kst

from .workers import ACCOUNT, API_KEY, API_SECRET, CountingIssuer

LEGACY_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.legacy-payload.legacy-signature"


def legacy_dict(api_key: str = API_KEY, api_secret: str = API_SECRET, lifetime: float = 20 * 3600) -> dict:
    """What 0.6.0 pickled: the tokenP fields plus key, secret and an epoch timestamp."""
    expires = time.time() + lifetime
    return {
        "access_token": LEGACY_TOKEN,
        "access_token_token_expired": format_kst(expires),
        "timestamp": int(expires),
        "api_key": api_key,
        "api_secret": api_secret,
    }


def write_legacy(path: Path, data: object, protocol: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=protocol)
    os.chmod(path, 0o644)  # 0.6.0 wrote with the default umask


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExploitViaEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def assert_is_clean_json(path: Path, secret: str) -> dict:
    raw = path.read_bytes()
    assert secret.encode() not in raw
    assert not looks_like_pickle(raw)
    assert b"\x80" not in raw  # no PROTO opcode anywhere: not a pickle stream
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(raw)


# ---------------------------------------------------------------------------------- unpickler
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_dict_pickles_load(protocol):
    data = legacy_dict()
    raw = pickle.dumps(data, protocol=protocol)
    assert looks_like_pickle(raw)
    assert load_plain_pickle(raw) == data


def test_builtin_containers_load():
    value = {"a": [1, 2.5, None, True], "b": (b"x", "y"), "c": {"d": frozenset()}}
    assert load_plain_pickle(pickle.dumps(value, protocol=4)) == value


def test_malicious_reduce_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps(_Exploit(marker), protocol=4)
    with pytest.raises(ValueError):
        load_plain_pickle(raw)
    assert not marker.exists()
    with pytest.raises(ValueError):
        load_plain_pickle(pickle.dumps(_ExploitViaEval(), protocol=2))


@pytest.mark.parametrize(
    "value",
    [
        __import__("collections").OrderedDict(a=1),
        __import__("datetime").datetime(2025, 1, 1),
        {"nested": __import__("decimal").Decimal("1.5")},
    ],
)
def test_any_global_is_refused(value):
    with pytest.raises(ValueError):
        load_plain_pickle(pickle.dumps(value, protocol=4))


@pytest.mark.parametrize("raw", [b"\x80", b"\x80\x04\x95garbage", b"\x80\x05" + b"\xff" * 40, b""])
def test_broken_pickles_raise_value_error(raw):
    with pytest.raises(ValueError):
        load_plain_pickle(raw)


def test_error_text_carries_no_content(tmp_path):
    raw = pickle.dumps(_Exploit(tmp_path / API_SECRET[:20]), protocol=4)
    with pytest.raises(ValueError) as info:
        load_plain_pickle(raw)
    assert API_SECRET[:20] not in str(info.value)


# ----------------------------------------------------------------------------- FileTokenStorage
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legacy_file_is_honoured_and_migrated(token_file, protocol):
    data = legacy_dict()
    write_legacy(token_file, data, protocol)
    storage = FileTokenStorage(token_file)
    loaded = storage.load_token(API_KEY, API_SECRET)
    assert loaded is not None
    assert loaded["access_token"] == LEGACY_TOKEN
    assert loaded["timestamp"] == data["timestamp"]
    assert loaded["api_secret"] == API_SECRET
    assert storage.check_token_valid(API_KEY, API_SECRET)
    document = assert_is_clean_json(token_file, API_SECRET)
    assert [e["access_token"] for e in document["tokens"].values()] == [LEGACY_TOKEN]


def test_legacy_file_get_token_issues_nothing(token_file):
    write_legacy(token_file, legacy_dict())
    issuer = CountingIssuer()
    record = FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, issuer)
    assert record.access_token == LEGACY_TOKEN
    assert issuer.calls == 0
    assert_is_clean_json(token_file, API_SECRET)


def test_legacy_file_with_another_secret_is_not_used(token_file):
    write_legacy(token_file, legacy_dict(api_secret="an-older-rotated-secret"))
    storage = FileTokenStorage(token_file)
    assert storage.load_token(API_KEY, API_SECRET) is None
    issuer = CountingIssuer()
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1
    assert record.access_token != LEGACY_TOKEN
    assert b"an-older-rotated-secret" not in token_file.read_bytes()


def test_expired_legacy_token_is_replaced(token_file):
    write_legacy(token_file, legacy_dict(lifetime=-60))
    issuer = CountingIssuer()
    storage = FileTokenStorage(token_file)
    assert not storage.check_token_valid(API_KEY, API_SECRET)
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1 and record.access_token != LEGACY_TOKEN
    assert_is_clean_json(token_file, API_SECRET)


def test_malicious_pickle_file_is_not_executed(token_file, caplog):
    marker = token_file.parent / "pwned"
    write_legacy(token_file, _Exploit(marker))
    storage = FileTokenStorage(token_file)
    with caplog.at_level(logging.WARNING):
        assert storage.load_token(API_KEY, API_SECRET) is None
        assert not storage.check_token_valid(API_KEY, API_SECRET)
    assert not marker.exists()
    assert any("token file" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # ... and the next save replaces it with a clean JSON file.
    issuer = CountingIssuer()
    storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1
    assert not marker.exists()
    assert_is_clean_json(token_file, API_SECRET)


@pytest.mark.parametrize("value", [["a", "list"], "a string", 42, {"access_token": "x"}, {}])
def test_pickle_of_the_wrong_shape_reads_as_no_token(token_file, caplog, value):
    write_legacy(token_file, value)
    with caplog.at_level(logging.WARNING):
        assert FileTokenStorage(token_file).load_token(API_KEY, API_SECRET) is None
    assert any(r.levelno == logging.WARNING for r in caplog.records)


# ------------------------------------------------------------------------------ the whole client
@pytest.mark.parametrize("protocol", [2, 5])
def test_client_honours_a_legacy_file_with_no_tokenp_call(fake_kis, token_file, protocol):
    data = legacy_dict(fake_kis.app_key, fake_kis.app_secret)
    write_legacy(token_file, data, protocol)
    with KoreaInvestment(
        fake_kis.app_key,
        fake_kis.app_secret,
        ACCOUNT,
        token_storage=FileTokenStorage(token_file),
        base_url=fake_kis.url,
    ) as client:
        assert client.access_token == f"Bearer {LEGACY_TOKEN}"
        assert client.check_access_token()
    assert fake_kis.stats.tokenp_requests == 0
    document = assert_is_clean_json(token_file, fake_kis.app_secret)
    (entry,) = document["tokens"].values()
    assert entry["access_token"] == LEGACY_TOKEN
    assert entry["api_key"] == fake_kis.app_key
    assert "api_secret" not in entry
    # A second client (a later run) reads the migrated JSON: still no tokenP.
    KoreaInvestment(
        fake_kis.app_key,
        fake_kis.app_secret,
        ACCOUNT,
        token_storage=FileTokenStorage(token_file),
        base_url=fake_kis.url,
    ).shutdown()
    assert fake_kis.stats.tokenp_requests == 0


def test_client_with_default_storage_honours_a_legacy_file(fake_kis, tmp_path, monkeypatch):
    path = tmp_path / "cache" / "kis" / "token.key"
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(path))
    write_legacy(path, legacy_dict(fake_kis.app_key, fake_kis.app_secret))
    with KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, base_url=fake_kis.url) as client:
        assert client.access_token == f"Bearer {LEGACY_TOKEN}"
    assert fake_kis.stats.tokenp_requests == 0
    assert_is_clean_json(path, fake_kis.app_secret)
