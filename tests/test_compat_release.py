"""The published 0.6.1 release's client, as its users' code calls it, against the fake KIS server.

The release users installed from the package index (tag ``v0.6.1``) differs
from the commit our first compatibility work followed: its fourth positional
parameter is ``token_storage``, construction goes through
``issue_access_token()`` when no valid token is stored, and it pins a few error
texts.  Written as user code of either release, over real loopback HTTP.
"""

from __future__ import annotations

import pytest

from korea_investment_stock import FileTokenStorage, KoreaInvestment
from korea_investment_stock.client import MOCK_BASE_URL

from .workers import ACCOUNT


@pytest.fixture
def store(token_file) -> FileTokenStorage:
    return FileTokenStorage(token_file, issue_deadline=3)


# --------------------------------------------------------------------- the two call shapes
def test_a_store_passed_fourth_is_the_store_as_in_0_6_1(fake_kis, store):
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    try:
        assert kis.token_storage is store
        assert kis.mock is False and kis.base_url == fake_kis.url
        assert store.check_token_valid(fake_kis.app_key, fake_kis.app_secret), "the token went to the store given"
        assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    finally:
        kis.shutdown()
    assert fake_kis.stats.tokenp_requests == 1


def test_a_bool_passed_fourth_is_mock_as_in_the_commit_before_it(fake_kis, store, monkeypatch):
    monkeypatch.delenv("KOREA_INVESTMENT_BASE_URL", raising=False)
    store.save_token(_stored(fake_kis))  # no HTTP: the mock host is not reachable from here
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, True, store)
    assert kis.mock is True and kis.base_url == MOCK_BASE_URL and kis.token_storage is store
    kis.shutdown()
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, False, token_storage=store)
    assert kis.mock is False and kis.token_storage is store
    kis.shutdown()


def test_keywords_work_as_before(fake_kis, store):
    kis = KoreaInvestment(
        api_key=fake_kis.app_key, api_secret=fake_kis.app_secret, acc_no=ACCOUNT, token_storage=store, mock=False
    )
    assert kis.token_storage is store and kis.mock is False
    kis.shutdown()


@pytest.mark.parametrize("fourth", [None, 1, "mock", "/tmp/token.key", object()])
def test_anything_else_fourth_is_a_clear_type_error(fake_kis, fourth):
    with pytest.raises(TypeError, match="mock.*token_storage|token_storage.*mock"):
        KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, fourth)
    assert fake_kis.stats.tokenp_requests == 0


def test_a_store_given_twice_is_a_type_error(fake_kis, store):
    with pytest.raises(TypeError, match="token_storage"):
        KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store, store)
    assert fake_kis.stats.tokenp_requests == 0


def _stored(fake_kis) -> dict:
    from .workers import make_record

    record = make_record("eyJ.stored.sig", api_key=fake_kis.app_key, api_secret=fake_kis.app_secret)
    return record.to_legacy_dict(fake_kis.app_secret)


# ------------------------------------------------- construction goes through issue_access_token
def test_construction_with_no_stored_token_goes_through_issue_access_token(fake_kis, store, monkeypatch):
    """0.6.1's US-stock tests patch it on the old module path, then build a client: no token request."""
    from unittest.mock import patch

    with patch("korea_investment_stock.korea_investment_stock.KoreaInvestment.issue_access_token") as issue:
        kis = KoreaInvestment(api_key=fake_kis.app_key, api_secret=fake_kis.app_secret, acc_no=ACCOUNT)
    issue.assert_called_once_with()
    assert fake_kis.stats.tokenp_requests == 0
    assert kis.access_token is None  # as in 0.6.1, nothing was issued
    kis.shutdown()


def test_a_valid_stored_token_is_used_without_issue_access_token(fake_kis, store):
    from unittest.mock import patch

    store.save_token(_stored(fake_kis))
    with patch.object(KoreaInvestment, "issue_access_token") as issue:
        kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    issue.assert_not_called()
    assert kis.access_token == "Bearer eyJ.stored.sig"
    kis.shutdown()


def test_a_subclass_overriding_issue_access_token_is_called_on_a_miss(fake_kis, store):
    calls = []

    class MyClient(KoreaInvestment):
        def issue_access_token(self) -> None:
            calls.append("mine")
            super().issue_access_token()  # ours: the single flight

    kis = MyClient(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    assert calls == ["mine"] and kis.access_token.startswith("Bearer ")
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    again = MyClient(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    assert calls == ["mine"], "a stored token needs no issuance"
    assert again.access_token == kis.access_token and fake_kis.stats.tokenp_requests == 1
    kis.shutdown()
    again.shutdown()


def test_an_assigned_access_token_is_the_one_sent(fake_kis, store):
    """0.6.1 code sets ``kis.access_token = "Bearer ..."``; the next call sends it."""
    from unittest.mock import patch

    donor = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    token = donor.access_token
    donor.shutdown()
    store.delete_token(fake_kis.app_key, fake_kis.app_secret)
    with patch.object(KoreaInvestment, "issue_access_token"):
        kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    kis.access_token = token
    assert kis.access_token == token
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert fake_kis.stats.tokenp_requests == 1, "the assigned token was sent; nothing was issued for it"
    kis.shutdown()


def test_an_assigned_token_kis_rejects_is_replaced_through_the_store(fake_kis, store):
    from unittest.mock import patch

    with patch.object(KoreaInvestment, "issue_access_token"):
        kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    kis.access_token = "Bearer test_token"  # as 0.6.1's tests do: KIS has never seen it
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert kis.access_token != "Bearer test_token" and fake_kis.stats.tokenp_requests == 1
    assert store.check_token_valid(fake_kis.app_key, fake_kis.app_secret)
    kis.shutdown()


def test_a_client_whose_issue_access_token_obtained_nothing_gets_a_token_on_first_call(fake_kis, store):
    from unittest.mock import patch

    with patch.object(KoreaInvestment, "issue_access_token"):
        kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert kis.access_token.startswith("Bearer ") and fake_kis.stats.tokenp_requests == 1
    kis.shutdown()


def test_issue_access_token_after_construction_still_replaces_the_token(fake_kis, store):
    fake_kis.configure(issue_window=0.0, same_token_window=0.0)
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    first = kis.access_token
    kis.issue_access_token()
    assert kis.access_token != first and fake_kis.stats.tokenp_requests == 2
    kis.shutdown()


# ------------------------------------------------------------------------- 0.6.1's error texts
def test_an_unknown_market_is_a_value_error_saying_unsupported_market_type(fake_kis, store):
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    with pytest.raises(ValueError, match="Unsupported market type"):
        kis.fetch_price("INVALID", "INVALID_MARKET")
    assert fake_kis.stats.rest_requests == 0
    kis.shutdown()


@pytest.mark.parametrize("call", ["fetch_price_detail_oversea", "fetch_price"])
def test_a_symbol_no_us_exchange_has_is_a_value_error_naming_it(fake_kis, store, call):
    from korea_investment_stock import SymbolNotFoundError

    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    with pytest.raises(ValueError, match="Unable to fetch price for symbol 'NOSUCH' in any US exchange") as caught:
        getattr(kis, call)("NOSUCH", "US")
    assert isinstance(caught.value, SymbolNotFoundError)  # and one of ours: a KISAPIError
    assert fake_kis.stats.rest_requests == 3  # NAS, NYS, AMS each answered blank
    kis.shutdown()


# --------------------------------------------- requests.get / requests.post replaced by user tests
# 0.6.1 called requests.get and requests.post itself, and its users' tests replace them to stand
# in for KIS (0.6.1's own do: patch("requests.get")).  Ours replace them with functions that
# still go to the fake server over loopback, so the HTTP is real; what is checked is the route.
def test_a_replaced_requests_get_carries_the_rest_calls(fake_kis, store, monkeypatch):
    import requests

    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    loopback = requests.Session()
    seen = []

    def forwarding_get(url, **kwargs):
        seen.append(url)
        return loopback.get(url, **kwargs)

    monkeypatch.setattr(requests, "get", forwarding_get)
    assert kis.fetch_domestic_price("J", "005930")["output"]["stck_shrn_iscd"] == "005930"
    assert seen == [fake_kis.url + "/uapi/domestic-stock/v1/quotations/inquire-price"]
    monkeypatch.undo()
    assert kis.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert len(seen) == 1 and fake_kis.stats.rest_requests == 2
    kis.shutdown()
    loopback.close()


def test_a_replaced_requests_post_carries_the_token_request(fake_kis, store, monkeypatch):
    import requests

    loopback = requests.Session()
    seen = []

    def forwarding_post(url, **kwargs):
        seen.append(url)
        return loopback.post(url, **kwargs)

    monkeypatch.setattr(requests, "post", forwarding_post)
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    assert seen == [fake_kis.url + "/oauth2/tokenP"] and fake_kis.stats.tokenp_requests == 1
    assert kis.access_token[7:] in fake_kis.issued_tokens()
    kis.shutdown()
    loopback.close()


def test_a_replaced_requests_get_answering_no_data_gives_0_6_1s_error(fake_kis, store, monkeypatch):
    """0.6.1's test_oversea_error_handling, with a stand-in answer instead of a Mock."""
    import requests

    class NoData:
        def json(self):
            return {"rt_cd": "1", "msg1": "조회할 자료가 없습니다"}

    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    monkeypatch.setattr(requests, "get", lambda url, **kwargs: NoData())
    with pytest.raises(ValueError, match="Unable to fetch price for symbol 'INVALID' in any US exchange"):
        kis.fetch_price_detail_oversea("INVALID", "US")
    assert fake_kis.stats.rest_requests == 0
    kis.shutdown()


# ----------------------------------------------- the fake answers what 0.6.1's own tests ask for
def test_the_fake_answers_the_symbols_0_6_1s_tests_use(fake_kis, store):
    kis = KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, store)
    for symbol, market in (("005930", "KR"), ("017670", "KR"), ("AAPL", "US")):
        assert kis.fetch_stock_info(symbol, market)["rt_cd"] == "0"
    assert kis.fetch_stock_info("017670", "KR")["output"]["prdt_abrv_name"] == "SK텔레콤"
    for symbol in ("005930", "294400"):
        answer = kis.fetch_search_stock_info(symbol, "KR")
        assert answer["rt_cd"] == "0" and "frbd_mket_lstg_dt" in answer["output"]
    assert kis.get_symbol_type(kis.fetch_stock_info("294400", "KR")) == "ETF"
    assert "nav" in kis.fetch_price("294400", "KR")["output"]  # priced as an ETF
    qqqm = kis.fetch_price_detail_oversea("QQQM", "US")
    assert qqqm["output"]["rsym"] == "DNASQQQM"
    kis.shutdown()
