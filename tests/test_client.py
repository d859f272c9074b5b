"""KoreaInvestment against the fake KIS server over real loopback HTTP."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
import types

import pytest
import requests

from korea_investment_stock import (
    ConfigurationError,
    FileTokenStorage,
    InvalidCredentialsError,
    KISAPIError,
    KISConnectionError,
    KoreaInvestment,
    KoreaInvestmentError,
    RateLimitExceededError,
    TokenIssueError,
)
from korea_investment_stock import client as client_module
from korea_investment_stock.client import MOCK_BASE_URL, REAL_BASE_URL

from .workers import ACCOUNT, make_record, run_together

HANG = 60.0


@pytest.fixture
def storage(token_file) -> FileTokenStorage:
    # A short issue deadline: a regression that re-issues inside KIS's minute fails in seconds, not 70 s.
    return FileTokenStorage(token_file, issue_deadline=3)


def connect(fake, storage, **kwargs) -> KoreaInvestment:
    kwargs.setdefault("base_url", fake.url)
    return KoreaInvestment(fake.app_key, fake.app_secret, ACCOUNT, token_storage=storage, **kwargs)


def preloaded(api_key: str, api_secret: str, storage: FileTokenStorage, token: str = "eyJ.preloaded.sig") -> str:
    """Store a valid token so that constructing a client needs no HTTP at all."""
    storage.save_token(make_record(token, api_key=api_key, api_secret=api_secret).to_legacy_dict(api_secret))
    return token


class RecordingSession(requests.Session):
    """A real session that remembers being closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


@pytest.fixture
def silent_url():
    """A port that accepts connections and never answers: every read times out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


class _HTMLHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def html_url():
    """A host that answers every request with an HTML page (a proxy error, say)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HTMLHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# -------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("key", "secret", "account"),
    [
        ("", "secret", ACCOUNT),
        ("key", "", ACCOUNT),
        ("key", "secret", ""),
        ("   ", "secret", ACCOUNT),
        ("key", " \t", ACCOUNT),
        (None, "secret", ACCOUNT),
        ("key", None, ACCOUNT),
        ("key", "secret", None),
    ],
)
def test_empty_arguments_raise_value_error(fake_kis, storage, key, secret, account):
    with pytest.raises(ValueError) as info:
        KoreaInvestment(key, secret, account, token_storage=storage, base_url=fake_kis.url)
    assert isinstance(info.value, KoreaInvestmentError)
    assert fake_kis.stats.tokenp_requests == 0


@pytest.mark.parametrize(
    "account", ["1234567801", "1234567-01", "12345678-1", "abcdefgh-01", "12345678-012", "12345678_01", " 12345678-01"]
)
def test_account_format(fake_kis, storage, account):
    with pytest.raises(ValueError) as info:
        connect_with_account(fake_kis, storage, account)
    assert "12345678-01" in str(info.value)
    assert fake_kis.stats.tokenp_requests == 0


def connect_with_account(fake, storage, account):
    return KoreaInvestment(fake.app_key, fake.app_secret, account, token_storage=storage, base_url=fake.url)


def test_account_parts(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        assert (client.acc_no_prefix, client.acc_no_postfix) == ("12345678", "01")


@pytest.mark.parametrize("timeout", [0, -1, (1, 0), (1, 2, 3), "5"])
def test_bad_timeouts(fake_kis, storage, timeout):
    with pytest.raises(ConfigurationError):
        connect(fake_kis, storage, timeout=timeout)


# ---------------------------------------------------------------------------------- base URL
def test_default_base_urls(storage):
    preloaded("real-key", "real-secret", storage)
    preloaded("mock-key", "mock-secret", storage)
    with KoreaInvestment("real-key", "real-secret", ACCOUNT, token_storage=storage) as real:
        assert real.base_url == REAL_BASE_URL == "https://openapi.koreainvestment.com:9443"
    with KoreaInvestment("mock-key", "mock-secret", ACCOUNT, mock=True, token_storage=storage) as mock:
        assert mock.base_url == MOCK_BASE_URL == "https://openapivts.koreainvestment.com:29443"


def test_environment_overrides_the_defaults(fake_kis, storage, monkeypatch):
    monkeypatch.setenv("KOREA_INVESTMENT_BASE_URL", fake_kis.url + "/")
    with KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, mock=True, token_storage=storage) as client:
        assert client.base_url == fake_kis.url
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert fake_kis.stats.tokenp_success == 1


def test_argument_overrides_the_environment(fake_kis, storage, monkeypatch):
    monkeypatch.setenv("KOREA_INVESTMENT_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing there
    with connect(fake_kis, storage, base_url=fake_kis.url) as client:
        assert client.base_url == fake_kis.url
    assert fake_kis.stats.tokenp_success == 1


@pytest.mark.parametrize("url", ["ftp://example.com", "openapi.koreainvestment.com:9443", "file:///etc/passwd"])
def test_base_url_scheme_is_checked(storage, url):
    with pytest.raises(ConfigurationError):
        KoreaInvestment("key", "secret", ACCOUNT, token_storage=storage, base_url=url)


# ------------------------------------------------------------------------------------ tokens
def test_construction_issues_once_and_sets_a_bearer_jwt(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        (jwt,) = fake_kis.issued_tokens()
        assert client.access_token == f"Bearer {jwt}"
        assert len(jwt.split(".")) == 3 and jwt.startswith("eyJ")
        assert client.check_access_token()
    assert fake_kis.stats.tokenp_requests == 1


def test_no_tokenp_call_when_a_valid_token_is_stored(fake_kis, storage):
    connect(fake_kis, storage).shutdown()
    fake_kis.reset_stats()
    for _ in range(5):
        with connect(fake_kis, FileTokenStorage(storage.file_path)) as client:
            assert client.access_token == f"Bearer {fake_kis.issued_tokens()[0]}"
    assert fake_kis.stats.tokenp_requests == 0


def test_load_access_token_adopts_the_stored_token(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        preloaded(fake_kis.app_key, fake_kis.app_secret, storage, "eyJ.put-there-by-a-peer.sig")
        client.load_access_token()
        assert client.access_token == "Bearer eyJ.put-there-by-a-peer.sig"
    assert fake_kis.stats.tokenp_requests == 1


def test_check_access_token_follows_the_store(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        assert client.check_access_token() is True
        storage.delete_token(fake_kis.app_key, fake_kis.app_secret)
        assert client.check_access_token() is False


def test_issue_access_token_by_20_clients_at_once_issues_once(fake_kis_factory, storage):
    fake = fake_kis_factory(same_token_window=0)  # every successful tokenP mints a new token
    clients = [connect(fake, storage) for _ in range(20)]
    old = clients[0].access_token
    assert all(c.access_token == old for c in clients)
    fake.advance(61)  # out of KIS's one-issuance-per-minute window
    fake.reset_stats()
    results, errors = run_together(20, lambda i: clients[i].issue_access_token())
    assert errors == [None] * 20
    stats = fake.stats
    assert stats.tokenp_requests == 1
    assert stats.tokens_issued == 1
    new = {c.access_token for c in clients}
    assert len(new) == 1 and new != {old}
    assert new == {f"Bearer {fake.issued_tokens()[-1]}"}
    for c in clients:
        c.shutdown()


def test_late_issue_access_token_adopts_the_replacement(fake_kis_factory, storage):
    # B still holds the token A already replaced: B must not delete A's fresh token and issue again.
    fake = fake_kis_factory(same_token_window=0)
    a, b = connect(fake, storage), connect(fake, FileTokenStorage(storage.file_path, issue_deadline=3))
    old = a.access_token
    fake.advance(61)
    fake.reset_stats()
    a.issue_access_token()
    b.issue_access_token()
    assert a.access_token == b.access_token != old
    assert fake.stats.tokenp_requests == 1
    a.shutdown()
    b.shutdown()


def test_late_dead_token_report_adopts_the_replacement(fake_kis, storage):
    a, b = connect(fake_kis, storage), connect(fake_kis, FileTokenStorage(storage.file_path, issue_deadline=3))
    fake_kis.advance(61)
    fake_kis.revoke_all()
    fake_kis.reset_stats()
    assert a.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert b.fetch_domestic_price("J", "005930")["rt_cd"] == "0"  # sees EGW00121, finds A's new token stored
    assert a.access_token == b.access_token
    stats = fake_kis.stats
    assert stats.tokenp_requests == 1
    assert stats.rest_rejected == {"EGW00121": 2}
    a.shutdown()
    b.shutdown()


def test_issue_access_token_replaces_the_stored_token(fake_kis_factory, storage):
    fake = fake_kis_factory(same_token_window=0)
    with connect(fake, storage) as client:
        old = client.access_token
        fake.advance(61)
        client.issue_access_token()
        assert client.access_token != old
        assert storage.load_token(fake.app_key, fake.app_secret)["access_token"] == client.access_token[7:]
    assert fake.stats.tokens_issued == 2


def test_token_nearing_expiry_is_refreshed_before_the_call(fake_kis, storage):
    preloaded(fake_kis.app_key, fake_kis.app_secret, storage, "eyJ.about-to-expire.sig")
    with connect(fake_kis, storage) as client:
        assert client.access_token == "Bearer eyJ.about-to-expire.sig"  # no tokenP: still valid
        storage.refresh_margin = 90000.0  # from now on that token counts as nearly expired
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
        assert client.access_token == f"Bearer {fake_kis.issued_tokens()[0]}"
    stats = fake_kis.stats
    assert stats.tokenp_requests == 1
    assert stats.rest_rejected == {}  # refreshed ahead of time, never sent to KIS


def test_revoke_access_token(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        revoked = client.access_token[len("Bearer ") :]
        answer = client.revoke_access_token()
        assert answer["code"] == 200
        assert fake_kis.stats.revoke_requests == 1
        assert storage.load_token(fake_kis.app_key, fake_kis.app_secret) is None
        # The revoked token is dead at KIS; the next call replaces it once and succeeds.
        fake_kis.advance(61)
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
        assert client.access_token != f"Bearer {revoked}"
    stats = fake_kis.stats
    assert stats.tokens_issued == 2
    assert stats.rest_rejected == {"EGW00121": 1}


def test_revoke_failure_is_a_clear_error(fake_kis, storage):
    preloaded(fake_kis.app_key, fake_kis.app_secret, storage, "eyJ.kis-never-issued-this.sig")
    with connect(fake_kis, storage) as client:
        with pytest.raises(TokenIssueError) as info:
            client.revoke_access_token()
    assert info.value.code == "EGW00121" and info.value.status == 403
    assert "revokeP" in str(info.value)
    assert fake_kis.app_secret not in str(info.value)
    assert fake_kis.stats.tokenp_requests == 0


# -------------------------------------------------------------------------------- quotations
def test_fetch_domestic_price(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_domestic_price("J", "005930")
    assert answer["rt_cd"] == "0" and answer["msg_cd"] == "MCA00000"
    assert answer["output"]["stck_shrn_iscd"] == "005930"
    assert answer["output"]["stck_prpr"].isdigit()
    assert fake_kis.stats.rest_requests == 1 and fake_kis.stats.rest_rejected == {}


def test_fetch_etf_domestic_price(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_etf_domestic_price("J", "069500")
    assert answer["rt_cd"] == "0"
    assert "nav" in answer["output"]


@pytest.mark.parametrize(
    ("symbol", "market", "calls"),
    [("AAPL", "US", 1), ("KO", "US", 2), ("SPY", "US", 3), ("KO", "NYSE", 1), ("SPY", "AMS", 1)],
)
def test_fetch_price_detail_oversea_tries_exchanges_in_order(fake_kis, storage, symbol, market, calls):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_price_detail_oversea(symbol, market)
    assert answer["rt_cd"] == "0"
    assert any(answer["output"].values())
    assert fake_kis.stats.rest_requests == calls


def test_fetch_price_detail_oversea_unknown_symbol_raises_after_every_exchange(fake_kis, storage):
    from korea_investment_stock import SymbolNotFoundError

    with connect(fake_kis, storage) as client, pytest.raises(SymbolNotFoundError, match="'NOSUCH'") as caught:
        client.fetch_price_detail_oversea("NOSUCH", "US")
    assert caught.value.msg_cd == "MCA00000"  # KIS's last answer: success, with blank fields
    assert fake_kis.stats.rest_requests == 3


def test_fetch_domestic_quote_raises_for_an_unknown_symbol(fake_kis, storage):
    from korea_investment_stock import SymbolNotFoundError

    with connect(fake_kis, storage) as client, pytest.raises(SymbolNotFoundError, match="'0059300'") as caught:
        client.fetch_domestic_quote("0059300")  # 7 digits: the fake knows every 6-character code
    assert isinstance(caught.value, ValueError)
    assert caught.value.msg_cd == "MCA00000"  # KIS's answer was a success with blank fields


def test_fetch_price_keeps_0_6_1s_answer_for_an_unknown_korean_symbol(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_price("0059300", "KR")  # 0.6.1 returned the blank answer: so do we
    assert answer["rt_cd"] == "0" and not any(answer["output"].values())


def test_fetch_domestic_quote_returns_data_for_a_known_symbol(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        quote = client.fetch_domestic_quote("005930")
    assert quote.price["output"]["stck_prpr"] and not quote.is_etf


def test_fetch_stock_info(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        kr = client.fetch_stock_info("005930", "KR")
        us = client.fetch_stock_info("KO", "US")
    assert kr["output"]["pdno"] == "005930" and kr["output"]["prdt_type_cd"] == "300"
    assert kr["output"]["prdt_clsf_name"] == "주권"
    assert us["output"]["prdt_type_cd"] == "513"  # NASDAQ (512) was blank, NYSE (513) answered


def test_fetch_search_stock_info(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_search_stock_info("005930")
        assert answer["rt_cd"] == "0" and answer["output"]["pdno"] == "005930"
        with pytest.raises(ConfigurationError):
            client.fetch_search_stock_info("AAPL", "US")


def test_fetch_price_kr_stock(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_price("005930")
    assert answer["output"]["stck_shrn_iscd"] == "005930"  # the stock endpoint
    assert "nav" not in answer["output"]


def test_fetch_price_kr_etf(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_price("069500", "KR")
    assert "nav" in answer["output"]  # the ETF endpoint


def test_fetch_price_us(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        answer = client.fetch_price("AAPL", "US")
    assert answer["rt_cd"] == "0" and any(answer["output"].values())
    with connect(fake_kis, storage) as client, pytest.raises(ConfigurationError):
        client.fetch_price("7203", "JP")


def test_other_rt_cd_is_returned_as_a_dict(fake_kis, storage):
    with connect(fake_kis, storage) as client:
        wrong_tr = client.request(
            "GET",
            "/uapi/domestic-stock/v1/quotations/inquire-price",
            "FHKST99999999",
            params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        )
        missing = client.request("GET", "/uapi/domestic-stock/v1/quotations/inquire-price", "FHKST01010100")
    assert wrong_tr["rt_cd"] != "0" and wrong_tr["msg_cd"] == "OPSQ0002"
    assert missing["rt_cd"] != "0" and missing["msg_cd"] == "OPSQ2001"


def test_issue_hashkey(fake_kis, storage):
    order = {"CANO": "12345678", "ACNT_PRDT_CD": "01", "PDNO": "005930", "ORD_QTY": "1"}
    with connect(fake_kis, storage) as client:
        digest = client.issue_hashkey(order)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert fake_kis.stats.hashkey_requests == 1


# ---------------------------------------------------------------------------------- lifecycle
def test_context_manager_closes_the_session(fake_kis, storage):
    session = RecordingSession()
    with connect(fake_kis, storage, session=session) as client:
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
        assert session.closed == 0
    assert session.closed >= 1


def test_shutdown_closes_the_session(fake_kis, storage):
    session = RecordingSession()
    client = connect(fake_kis, storage, session=session)
    client.shutdown()
    assert session.closed >= 1
    assert storage.check_token_valid(fake_kis.app_key, fake_kis.app_secret)  # the token stays for others


def test_one_session_per_client(fake_kis, storage):
    a, b = connect(fake_kis, storage), connect(fake_kis, storage)
    assert isinstance(a._session, requests.Session) and a._session is not b._session
    a.shutdown()
    b.shutdown()


def test_failed_construction_closes_the_session(fake_kis, storage):
    session = RecordingSession()
    with pytest.raises(InvalidCredentialsError) as info:
        KoreaInvestment(
            fake_kis.app_key, "not-the-secret", ACCOUNT, token_storage=storage, base_url=fake_kis.url, session=session
        )
    assert session.closed >= 1
    assert info.value.code == "EGW00105"
    assert fake_kis.stats.tokenp_requests == 1  # a permanent error is never retried
    assert "not-the-secret" not in str(info.value)


def test_wrong_app_key(fake_kis, storage):
    with pytest.raises(InvalidCredentialsError) as info:
        KoreaInvestment("PS" + "x" * 34, fake_kis.app_secret, ACCOUNT, token_storage=storage, base_url=fake_kis.url)
    assert info.value.code == "EGW00103"
    assert "app key" in str(info.value)


# ----------------------------------------------------------------------------------- timeouts
def test_tokenp_timeout_is_bounded(fake_kis, storage):
    fake_kis.set_token_fault("timeout", delay=20)
    error = bounded(lambda: connect(fake_kis, storage, timeout=(2, 0.5)), limit=5)
    assert isinstance(error, TokenIssueError)
    assert "did not answer within 0.5s" in str(error)


def bounded(call, limit: float = 10.0) -> BaseException | None:
    """Run ``call`` in a thread; fail the test if it has not finished within ``limit`` seconds."""
    outcome: list[BaseException | None] = []

    def body():
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"call still blocked after {limit}s: no timeout?"
    assert time.monotonic() - started < limit
    return outcome[0]


def test_rest_call_timeout_is_bounded(silent_url, storage):
    preloaded("key", "secret", storage)
    with KoreaInvestment("key", "secret", ACCOUNT, token_storage=storage, base_url=silent_url, timeout=0.3) as client:
        error = bounded(lambda: client.fetch_domestic_price("J", "005930"))
        assert isinstance(error, KISConnectionError)
        assert "0.3s" in str(error)
        assert isinstance(bounded(lambda: client.issue_hashkey({"a": "b"})), KISConnectionError)
        assert isinstance(bounded(client.revoke_access_token), TokenIssueError)


def test_every_session_call_passes_a_timeout(fake_kis, storage):
    seen: list[object] = []

    class Checking(requests.Session):
        def request(self, method, url, *args, **kwargs):
            seen.append(kwargs.get("timeout"))
            return super().request(method, url, *args, **kwargs)

    with connect(fake_kis, storage, session=Checking(), timeout=(1.5, 4)) as client:
        client.fetch_price("005930")
        client.fetch_price("AAPL", "US")
        client.issue_hashkey({"a": "b"})
        client.revoke_access_token()
    assert len(seen) >= 6
    assert all(t == (1.5, 4.0) for t in seen), seen


def test_non_json_answers_are_clear_errors(html_url, storage):
    preloaded("key", "secret", storage)
    with KoreaInvestment("key", "secret", ACCOUNT, token_storage=storage, base_url=html_url) as client:
        with pytest.raises(KISAPIError) as info:
            client.fetch_domestic_price("J", "005930")
        assert not isinstance(info.value, KISConnectionError)
        assert "not JSON" in str(info.value)
        with pytest.raises(KISAPIError) as info:
            client.issue_hashkey({"a": "b"})
        assert not isinstance(info.value, KISConnectionError)  # the host answered: not a connection problem
        assert "not JSON" in str(info.value)


def test_malformed_tokenp_answer_is_a_clear_error(fake_kis, storage):
    fake_kis.set_token_fault("malformed")
    with pytest.raises(TokenIssueError) as info:
        connect(fake_kis, storage)
    assert "not JSON" in str(info.value)


def test_tokenp_http_500_is_a_clear_error(fake_kis, storage):
    fake_kis.set_token_fault("http500")
    with pytest.raises(TokenIssueError) as info:
        connect(fake_kis, storage)
    assert info.value.status == 500


# -------------------------------------------------------------------------- dead tokens (EGW00121/3)
@pytest.mark.parametrize("kill", ["revoke_all", "expire_all", "advance"])
def test_dead_token_is_replaced_once_across_20_threads(fake_kis, storage, kill):
    client = connect(fake_kis, storage)
    old = client.access_token
    if kill == "advance":
        fake_kis.advance(86400 + 61)  # KIS's clock says the token expired; ours does not know yet
    else:
        fake_kis.advance(61)
        getattr(fake_kis, kill)()
    fake_kis.reset_stats()
    results, errors = run_together(20, lambda i: client.fetch_domestic_price("J", "005930"))
    assert errors == [None] * 20
    assert all(r["rt_cd"] == "0" for r in results)
    stats = fake_kis.stats
    assert stats.tokenp_requests == 1
    assert stats.tokens_issued == 1
    assert client.access_token != old
    assert client.access_token == f"Bearer {fake_kis.issued_tokens()[-1]}"
    assert sum(stats.rest_rejected.values()) <= 20  # each thread at most one dead answer
    client.shutdown()


def test_dead_token_seen_by_20_clients_is_replaced_once(fake_kis, storage):
    clients = [connect(fake_kis, FileTokenStorage(storage.file_path)) for _ in range(20)]
    fake_kis.advance(61)
    fake_kis.revoke_all()
    fake_kis.reset_stats()
    results, errors = run_together(20, lambda i: clients[i].fetch_domestic_price("J", "005930"))
    assert errors == [None] * 20
    assert fake_kis.stats.tokenp_requests == 1
    assert len({c.access_token for c in clients}) == 1
    for c in clients:
        c.shutdown()


@pytest.mark.parametrize("status", [200, 500])
def test_dead_token_detected_whatever_the_http_status(fake_kis_factory, storage, status):
    fake = fake_kis_factory(dead_token_status=status)
    with connect(fake, storage) as client:
        fake.advance(61)
        fake.expire_all()
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
    assert fake.stats.tokens_issued == 2


# ----------------------------------------------------------------------------------- EGW00201
def test_rate_limit_is_retried_then_succeeds(fake_kis_factory, storage, monkeypatch):
    fake = fake_kis_factory(rest_rate_limit=1)
    pauses: list[float] = []

    def virtual_sleep(seconds: float) -> None:  # let KIS's second pass without really waiting
        pauses.append(seconds)
        fake.advance(1.0)

    monkeypatch.setattr(
        client_module, "time", types.SimpleNamespace(sleep=virtual_sleep, time=time.time, monotonic=time.monotonic)
    )
    with connect(fake, storage) as client:
        assert client.fetch_domestic_price("J", "005930")["rt_cd"] == "0"
        assert client.fetch_domestic_price("J", "000660")["output"]["stck_shrn_iscd"] == "000660"
    assert fake.stats.rest_rejected == {"EGW00201": 1}
    assert len(pauses) == 1 and 0 < pauses[0] <= 1.0


def test_rate_limit_gives_up_after_bounded_retries(fake_kis_factory, storage, monkeypatch):
    fake = fake_kis_factory(rest_rate_limit=1)
    pauses: list[float] = []
    monkeypatch.setattr(
        client_module, "time", types.SimpleNamespace(sleep=pauses.append, time=time.time, monotonic=time.monotonic)
    )
    with connect(fake, storage, rate_limit_retries=2) as client:
        client.fetch_domestic_price("J", "005930")
        with pytest.raises(RateLimitExceededError) as info:
            client.fetch_domestic_price("J", "005930")
    assert info.value.msg_cd == "EGW00201"
    assert fake.stats.rest_rejected == {"EGW00201": 3}
    assert len(pauses) == 2 and pauses[1] > pauses[0] * 0.3  # backoff grows (with jitter)


# ----------------------------------------------------------------------------- secrets stay secret
def test_no_secret_in_repr_errors_or_logs(fake_kis, storage, caplog, silent_url):
    secret = fake_kis.app_secret
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        with connect(fake_kis, storage) as client:
            token = client.access_token[len("Bearer ") :]
            texts += [repr(client), str(client), repr(client.token_storage), repr(client._token), repr(client._issuer)]
            client.fetch_price("005930")
            fake_kis.advance(61)
            fake_kis.revoke_all()
            client.fetch_price("AAPL", "US")
        for make in (
            lambda: KoreaInvestment(
                fake_kis.app_key, secret + "x", ACCOUNT, token_storage=storage, base_url=fake_kis.url, timeout=1
            ),
            lambda: KoreaInvestment(fake_kis.app_key, secret, "bad", token_storage=storage, base_url=fake_kis.url),
            lambda: KoreaInvestment(
                fake_kis.app_key,
                secret,
                ACCOUNT,
                token_storage=FileTokenStorage(storage.file_path.with_name("x")),
                base_url=silent_url,
                timeout=0.3,
            ),
        ):
            with pytest.raises(KoreaInvestmentError) as info:
                make()
            texts += [str(info.value), repr(info.value)]
    assert "12345678" not in repr(client)  # the account number is masked too
    for text in texts:
        assert secret not in text
        assert secret[:20] not in text
        assert token not in text
    ours = "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("korea_investment_stock") and not r.name.startswith("korea_investment_stock.testing")
    )
    assert secret not in ours and token not in ours
