"""0.6.1 user code, run against this release: import paths, constants, methods and store semantics.

Written the way code against the published 0.6.1 release reads, over real
loopback HTTP to the fake KIS server.  Master files and the IPO schedule have
suites of their own (``test_compat_masters.py``, ``test_compat_ipo.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing

import fakeredis
import pytest
import redis

from korea_investment_stock.token.record import format_kst

from .workers import ACCOUNT, API_KEY, API_SECRET


def legacy_dict(token: str, lifetime: float) -> dict:
    expires = time.time() + lifetime
    return {
        "access_token": token,
        "access_token_token_expired": format_kst(expires),
        "timestamp": int(expires),
        "api_key": API_KEY,
        "api_secret": API_SECRET,
    }


# ------------------------------------------------------------------------- import paths
def test_the_three_import_paths():
    from korea_investment_stock import (
        API_RETURN_CODE,
        EXCHANGE_CODE,
        EXCHANGE_CODE2,
        FileTokenStorage,
        KoreaInvestment,
        RedisTokenStorage,
        TokenStorage,
    )
    from korea_investment_stock.korea_investment_stock import EXCHANGE_CODE as EXCHANGE_CODE_AGAIN
    from korea_investment_stock.korea_investment_stock import KoreaInvestment as KoreaInvestmentAgain
    from korea_investment_stock.token_storage import FileTokenStorage as FileAgain
    from korea_investment_stock.token_storage import RedisTokenStorage as RedisAgain
    from korea_investment_stock.token_storage import TokenStorage as TokenStorageAgain
    from korea_investment_stock.token_storage.token_storage import FileTokenStorage as FileInModule
    from korea_investment_stock.token_storage.token_storage import RedisTokenStorage as RedisInModule

    assert (FileInModule, RedisInModule) == (FileTokenStorage, RedisTokenStorage)
    assert KoreaInvestmentAgain is KoreaInvestment and EXCHANGE_CODE_AGAIN is EXCHANGE_CODE
    assert (FileAgain, RedisAgain, TokenStorageAgain) == (FileTokenStorage, RedisTokenStorage, TokenStorage)
    assert API_RETURN_CODE["SUCCESS"] == "0" and EXCHANGE_CODE2["미국전체"] == "NASD"


def test_0_6_1s_all_is_exported():
    import korea_investment_stock

    published = {
        "KoreaInvestment", "EXCHANGE_CODE", "EXCHANGE_CODE2", "API_RETURN_CODE", "CacheManager", "CacheEntry",
        "CachedKoreaInvestment", "TokenStorage", "FileTokenStorage", "RedisTokenStorage", "RateLimiter",
        "RateLimitedKoreaInvestment",
    }  # fmt: skip
    assert published <= set(korea_investment_stock.__all__)
    for name in published:
        assert getattr(korea_investment_stock, name) is not None


@pytest.mark.parametrize(
    "statement",
    [
        "import korea_investment_stock",
        "from korea_investment_stock.korea_investment_stock import KoreaInvestment, EXCHANGE_CODE",
        "from korea_investment_stock.token_storage import TokenStorage, FileTokenStorage, RedisTokenStorage",
        "from korea_investment_stock.token_storage.token_storage import FileTokenStorage, RedisTokenStorage",
        "from korea_investment_stock import CacheManager, CacheEntry, CachedKoreaInvestment",
        "from korea_investment_stock import RateLimiter, RateLimitedKoreaInvestment",
        "from korea_investment_stock.cache.cache_manager import CacheManager, CacheEntry",
        "from korea_investment_stock.cache.cached_korea_investment import CachedKoreaInvestment",
        "from korea_investment_stock.rate_limit.rate_limiter import RateLimiter",
        "from korea_investment_stock.rate_limit.rate_limited_korea_investment import RateLimitedKoreaInvestment",
        "from korea_investment_stock import *",
    ],
)
def test_importing_pulls_in_neither_redis_nor_pandas(statement):
    code = f"import sys; {statement}; print(sorted(m for m in ('redis', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- constants
def test_every_constant_has_0_6_1s_value():
    import korea_investment_stock.korea_investment_stock as old

    assert old.EXCHANGE_CODE == {
        "홍콩": "HKS", "뉴욕": "NYS", "나스닥": "NAS", "아멕스": "AMS", "도쿄": "TSE", "상해": "SHS",
        "심천": "SZS", "상해지수": "SHI", "심천지수": "SZI", "호치민": "HSX", "하노이": "HNX",
    }  # fmt: skip
    assert old.EXCHANGE_CODE2 == {
        "미국전체": "NASD", "나스닥": "NAS", "뉴욕": "NYSE", "아멕스": "AMEX", "홍콩": "SEHK",
        "상해": "SHAA", "심천": "SZAA", "도쿄": "TKSE", "하노이": "HASE", "호치민": "VNSE",
    }  # fmt: skip
    assert old.EXCHANGE_CODE3 == {
        "나스닥": "NASD", "뉴욕": "NYSE", "아멕스": "AMEX", "홍콩": "SEHK", "상해": "SHAA",
        "심천": "SZAA", "도쿄": "TKSE", "하노이": "HASE", "호치민": "VNSE",
    }  # fmt: skip
    assert old.EXCHANGE_CODE4 == {
        "나스닥": "NAS", "뉴욕": "NYS", "아멕스": "AMS", "홍콩": "HKS", "상해": "SHS", "심천": "SZS",
        "도쿄": "TSE", "하노이": "HNX", "호치민": "HSX", "상해지수": "SHI", "심천지수": "SZI",
    }  # fmt: skip
    assert old.CURRENCY_CODE == {
        "나스닥": "USD", "뉴욕": "USD", "아멕스": "USD", "홍콩": "HKD", "상해": "CNY", "심천": "CNY",
        "도쿄": "JPY", "하노이": "VND", "호치민": "VND",
    }  # fmt: skip
    assert old.MARKET_TYPE_MAP == {
        "KR": ["300"], "KRX": ["300"], "NASDAQ": ["512"], "NYSE": ["513"], "AMEX": ["529"],
        "US": ["512", "513", "529"], "TYO": ["515"], "JP": ["515"], "HKEX": ["501"],
        "HK": ["501", "543", "558"], "HNX": ["507"], "HSX": ["508"], "VN": ["507", "508"],
        "SSE": ["551"], "SZSE": ["552"], "CN": ["551", "552"],
    }  # fmt: skip
    assert typing.get_args(old.MARKET_TYPE) == (
        "KRX", "NASDAQ", "NYSE", "AMEX", "TYO", "HKEX", "HNX", "HSX", "SSE", "SZSE",
    )  # fmt: skip
    assert typing.get_args(old.EXCHANGE_TYPE) == ("NAS", "NYS", "AMS")
    assert old.MARKET_CODE_MAP == {
        "300": "KRX", "301": "KRX", "302": "KRX", "512": "NASDAQ", "513": "NYSE", "529": "AMEX",
        "515": "TYO", "501": "HKEX", "543": "HKEX", "558": "HKEX", "507": "HNX", "508": "HSX",
        "551": "SSE", "552": "SZSE",
    }  # fmt: skip
    assert old.EXCHANGE_CODE_MAP == {"NASDAQ": "NAS", "NYSE": "NYS", "AMEX": "AMS"}
    assert old.API_RETURN_CODE == {
        "SUCCESS": "0", "EXPIRED_TOKEN": "1", "NO_DATA": "7", "RATE_LIMIT_EXCEEDED": "EGW00201",
    }  # fmt: skip


# ------------------------------------------------------------------------------ client
@pytest.fixture
def client(fake_kis, tmp_path):
    from korea_investment_stock import FileTokenStorage, KoreaInvestment

    kis = KoreaInvestment(
        fake_kis.app_key,
        fake_kis.app_secret,
        ACCOUNT,
        token_storage=FileTokenStorage(tmp_path / "kis" / "token.key"),
        base_url=fake_kis.url,
    )
    yield kis
    kis.shutdown()


def test_public_attributes_0_6_1_code_reads(client, fake_kis):
    assert client.api_key == fake_kis.app_key
    assert client.acc_no == ACCOUNT and client.acc_no_prefix == "12345678" and client.acc_no_postfix == "01"
    assert client.mock is False and client.base_url == fake_kis.url
    assert client.access_token.startswith("Bearer ") and client.access_token[7:] in fake_kis.issued_tokens()
    assert client.token_storage.check_token_valid(fake_kis.app_key, fake_kis.app_secret)


def test_set_base_url(client):
    from korea_investment_stock.client import MOCK_BASE_URL, REAL_BASE_URL

    client.set_base_url(True)
    assert (client.mock, client.base_url) == (True, MOCK_BASE_URL)
    client.set_base_url(mock=False)
    assert (client.mock, client.base_url) == (False, REAL_BASE_URL)
    client.set_base_url()
    assert client.base_url == MOCK_BASE_URL


@pytest.mark.parametrize(
    ("product_class", "expected"),
    [
        ("주권", "Stock"),
        ("상장REITS", "Stock"),
        ("사회간접자본투융자회사", "Stock"),
        ("ETF", "ETF"),
        ("ETN", "Unknown"),
    ],
)
def test_get_symbol_type(client, product_class, expected):
    assert client.get_symbol_type({"output": {"prdt_clsf_name": product_class}}) == expected
    assert client.get_symbol_type({"rt_cd": "7", "output": {}}) == "Unknown"


def test_get_symbol_type_on_a_real_answer(client):
    assert client.get_symbol_type(client.fetch_stock_info("005930")) == "Stock"


@pytest.mark.parametrize("market", ["KR", "KRX", "US", "JP", "HK", "VN", "CN"])
def test_fetch_stock_info_takes_every_market_of_market_type_map(client, market):
    answer = client.fetch_stock_info("005930" if market in ("KR", "KRX") else "AAPL", market)
    assert isinstance(answer, dict) and "rt_cd" in answer


# --------------------------------------------------------------------------- the stores
def test_file_store_token_file_is_the_resolved_path(tmp_path):
    from korea_investment_stock.token_storage import FileTokenStorage

    storage = FileTokenStorage(str(tmp_path / "kis" / "token.key"))
    assert storage.token_file == tmp_path / "kis" / "token.key"


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_load_token_returns_none_for_an_expired_token(kind, tmp_path, monkeypatch):
    from korea_investment_stock.token_storage import FileTokenStorage, RedisTokenStorage

    if kind == "redis":
        server = fakeredis.FakeServer()
        monkeypatch.setattr(redis, "from_url", lambda url, **kw: fakeredis.FakeRedis(server=server))
        storage = RedisTokenStorage("redis://localhost:6379/0")
    else:
        storage = FileTokenStorage(tmp_path / "kis" / "token.key")
    assert storage.save_token(legacy_dict("eyJ.expired.sig", -60)) in (True, False)
    if storage.load_token(API_KEY, API_SECRET):
        pytest.fail("an expired token must load as None")
    assert storage.save_token(legacy_dict("eyJ.fresh.sig", 3600)) is True
    assert storage.load_token(API_KEY, API_SECRET)["access_token"] == "eyJ.fresh.sig"


def test_redis_store_built_through_a_replaced_redis_from_url(monkeypatch):
    """The pattern 0.6.1's tests teach: swap redis.from_url for a fakeredis factory; no socket opens."""
    from korea_investment_stock.token_storage import RedisTokenStorage

    server = fakeredis.FakeServer()
    urls = []

    def fake_from_url(url, **kwargs):
        urls.append(url)
        return fakeredis.FakeRedis(server=server, decode_responses=True)

    monkeypatch.setattr(redis, "from_url", fake_from_url)
    storage = RedisTokenStorage("redis://localhost:6379/0", password="pw", key_prefix="myapp:token")
    assert urls == ["redis://:pw@localhost:6379/0"]  # 0.6.1 put a separate password into the URL
    assert isinstance(storage.redis_client, fakeredis.FakeRedis)
    assert storage.key_prefix == "myapp:token"
    key = storage._get_redis_key(API_KEY)
    assert key.startswith("myapp:token:")
    assert storage.save_token(legacy_dict("eyJ.saved.sig", 3600)) is True
    assert storage.check_token_valid(API_KEY, API_SECRET)
    assert storage.redis_client.hget(key, "access_token") == "eyJ.saved.sig"
    assert storage.delete_token(API_KEY, API_SECRET) is True
    assert storage.load_token(API_KEY, API_SECRET) is None


def test_an_unreachable_redis_is_caught_by_except_connection_error(redis_binary_or_skip):
    from korea_investment_stock.token_storage import RedisTokenStorage

    try:
        RedisTokenStorage(f"redis://127.0.0.1:{redis_binary_or_skip}/0")  # 0.6.1 pinged here, and so do we
    except ConnectionError as exc:
        assert "127.0.0.1" in str(exc)
    else:
        pytest.fail("no error from an unreachable Redis")


@pytest.fixture
def redis_binary_or_skip():
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_save_token_answers_true_or_false(tmp_path):
    from korea_investment_stock.token_storage import FileTokenStorage

    storage = FileTokenStorage(tmp_path / "kis" / "token.key")
    assert storage.save_token(legacy_dict("eyJ.one.sig", 3600)) is True
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert FileTokenStorage(blocked / "token.key").save_token(legacy_dict("eyJ.two.sig", 3600)) is False


# -------------------------------------------------------------------- symbol master files
@pytest.fixture
def market_client(fake_kis, tmp_path, monkeypatch):
    """A client whose master-file host is the fake server, with the cache beside its token file."""
    from korea_investment_stock import FileTokenStorage, KoreaInvestment

    monkeypatch.delenv("KOREA_INVESTMENT_MASTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("KOREA_INVESTMENT_MASTER_URL", fake_kis.url)
    kis = KoreaInvestment(
        fake_kis.app_key,
        fake_kis.app_secret,
        ACCOUNT,
        token_storage=FileTokenStorage(tmp_path / "kis" / "token.key"),
        base_url=fake_kis.url,
    )
    yield kis
    kis.shutdown()


def test_fetch_symbols_the_0_6_1_way(market_client, fake_kis, tmp_path):
    from korea_investment_stock.testing.masters import kosdaq_rows, kospi_rows

    kospi = market_client.fetch_kospi_symbols()
    kosdaq = market_client.fetch_kosdaq_symbols()
    both = market_client.fetch_symbols()
    assert list(kospi.columns[:4]) == ["단축코드", "표준코드", "한글명", "그룹코드"]
    assert len(kospi) == len(kospi_rows()) and len(kosdaq) == len(kosdaq_rows())
    assert list(both.columns) == ["단축코드", "한글명", "그룹코드", "시장"]
    assert len(both) == len(kospi) + len(kosdaq)
    assert set(both["시장"]) == {"코스피", "코스닥"}
    assert "삼성전자" in set(kospi["한글명"])
    assert fake_kis.stats.master_downloads == {"kospi_code.mst.zip": 1, "kosdaq_code.mst.zip": 1}
    assert any((tmp_path / "kis" / "masters").iterdir()), "the daily cache sits beside the token file"


def test_download_and_parse_master_files_the_0_6_1_way(market_client, fake_kis, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    base_dir = tmp_path / "masters-by-hand"
    url = fake_kis.url + "/common/master/kosdaq_code.mst.zip"
    market_client.download_master_file(str(base_dir), "kosdaq_code.mst.zip", url)
    frame = market_client.parse_kosdaq_master(str(base_dir))
    assert len(frame) > 0 and "한글명" in frame.columns
    assert list(work.iterdir()) == [] and os.getcwd() == str(work)


def test_a_bad_archive_is_refused_by_the_client_method(market_client, fake_kis, tmp_path):
    from korea_investment_stock import MasterFileError

    fake_kis.set_master_fault("zip-slip")
    base_dir = tmp_path / "refused"
    with pytest.raises(MasterFileError):
        market_client.download_master_file(
            str(base_dir), "kospi_code.mst.zip", fake_kis.url + "/common/master/kospi_code.mst.zip"
        )
    assert not base_dir.exists() or list(base_dir.iterdir()) == []
    assert not (tmp_path / "evil.mst").exists()


# ---------------------------------------------------------------------------- IPO schedule
def test_fetch_ipo_schedule_the_0_6_1_way(client):
    answer = client.fetch_ipo_schedule()
    assert answer["rt_cd"] == "0" and isinstance(answer["output1"], list)
    for record in answer["output1"]:
        assert client.get_ipo_status(record["subscr_dt"]) in ("예정", "진행중", "마감")
    with pytest.raises(ValueError):
        client.fetch_ipo_schedule("20240131", "20240101")
