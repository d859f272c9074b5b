"""Tests of the fake KIS server (korea_investment_stock.testing) over real loopback HTTP.

The fake is what every other test trusts, so its rules are pinned here against
the facts sheet: exact status codes, shapes and Korean messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import requests

from korea_investment_stock.testing import FakeKIS, FakeKISStats, TokenFault
from korea_investment_stock.testing.state import KISState, Settings

T0 = 1_738_726_740.0  # 2025-02-05 03:39:00 UTC = 12:39:00 KST
JWT_HEADER = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9"
MSG_133 = "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)"
PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
PRICE_QUERY = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
KST = timezone(timedelta(hours=9))
REPO = Path(__file__).resolve().parents[1]

Factory = Callable[..., FakeKIS]


# -- helpers ---------------------------------------------------------------------------------


def session() -> requests.Session:
    """A session that ignores proxy variables, so loopback stays loopback."""
    s = requests.Session()
    s.trust_env = False
    return s


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with session() as s:
        yield s


@pytest.fixture
def fixed(fake_kis_factory: Factory) -> FakeKIS:
    """A fake whose clock stands still at T0 unless advanced."""
    return fake_kis_factory(clock=lambda: T0)


def token_request(
    http: requests.Session, fake: FakeKIS, *, appkey: str | None = None, appsecret: str | None = None, **kw: Any
) -> requests.Response:
    body = {
        "grant_type": "client_credentials",
        "appkey": fake.app_key if appkey is None else appkey,
        "appsecret": fake.app_secret if appsecret is None else appsecret,
    }
    return http.post(f"{fake.url}/oauth2/tokenP", json=body, timeout=kw.pop("timeout", 10), **kw)


def issue(http: requests.Session, fake: FakeKIS) -> str:
    r = token_request(http, fake)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def rest(
    http: requests.Session,
    fake: FakeKIS,
    token: str,
    *,
    path: str = PRICE,
    tr_id: str = "FHKST01010100",
    params: dict[str, str] | None = None,
    appkey: str | None = None,
    bearer: str = "Bearer ",
) -> requests.Response:
    headers = {
        "content-type": "application/json; charset=utf-8",
        "authorization": bearer + token,
        "appkey": fake.app_key if appkey is None else appkey,
        "appsecret": fake.app_secret,
        "tr_id": tr_id,
        "custtype": "P",
    }
    return http.get(fake.url + path, headers=headers, params=PRICE_QUERY if params is None else params, timeout=10)


def control(http: requests.Session, fake: FakeKIS, **body: Any) -> requests.Response:
    return http.post(f"{fake.url}/__fake__/control", json=body, timeout=10)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


# -- tokenP ----------------------------------------------------------------------------------


def test_token_success_shape_and_kst_expiry(fixed: FakeKIS, http: requests.Session) -> None:
    r = token_request(http, fixed)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "access_token_token_expired", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    # Written out by hand: T0 + 24 h in Seoul, no zone marker.
    assert body["access_token_token_expired"] == "2025-02-06 12:39:00"
    token = body["access_token"]
    head, _, sig = token.split(".")
    assert head == JWT_HEADER
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", sig)
    claims = jwt_claims(token)
    assert claims["sub"] == fixed.app_key
    assert claims["exp"] == int(T0) + 86400
    exp_kst = datetime.fromtimestamp(claims["exp"], KST).strftime("%Y-%m-%d %H:%M:%S")
    assert exp_kst == body["access_token_token_expired"]
    stats = fixed.stats
    assert (stats.tokenp_requests, stats.tokens_issued, stats.tokenp_success) == (1, 1, 1)
    assert stats.last_issued_at == T0
    assert fixed.issued_tokens() == [token]


def test_default_credentials_look_like_kis_ones(fake_kis: FakeKIS) -> None:
    assert len(fake_kis.app_key) == 36
    assert len(fake_kis.app_secret) == 180
    assert FakeKIS().app_key != FakeKIS().app_key


def test_second_request_inside_window_is_egw00133_then_same_token_after_window(
    fixed: FakeKIS, http: requests.Session
) -> None:
    first = token_request(http, fixed).json()
    fixed.advance(59.9)
    r = token_request(http, fixed)
    assert r.status_code == 403
    assert r.json() == {"error_description": MSG_133, "error_code": "EGW00133"}
    fixed.advance(1.1)  # 61 s after the issuance
    again = token_request(http, fixed)
    assert again.status_code == 200
    assert again.json() == first  # same token, same expiry, expires_in still 86400
    stats = fixed.stats
    assert stats.tokens_issued == 1
    assert stats.tokenp_success == 2
    assert stats.tokenp_rejected == {"EGW00133": 1}
    assert stats.last_issued_at == T0 + 61


def test_same_token_reanswer_restarts_the_window(fixed: FakeKIS, http: requests.Session) -> None:
    issue(http, fixed)
    fixed.advance(61)
    issue(http, fixed)  # same token re-answered: counts as a success
    fixed.advance(30)
    assert token_request(http, fixed).json()["error_code"] == "EGW00133"


def test_new_token_after_six_hours(fixed: FakeKIS, http: requests.Session) -> None:
    first = token_request(http, fixed).json()
    fixed.advance(6 * 3600 - 1)
    assert token_request(http, fixed).json()["access_token"] == first["access_token"]
    fixed.advance(61)
    second = token_request(http, fixed).json()
    assert second["access_token"] != first["access_token"]
    expected = datetime.fromtimestamp(int(T0 + 6 * 3600 + 60 + 86400), KST).strftime("%Y-%m-%d %H:%M:%S")
    assert second["access_token_token_expired"] == expected
    assert fixed.stats.tokens_issued == 2
    assert fixed.issued_tokens() == [first["access_token"], second["access_token"]]


def test_window_counts_from_requests_when_switched(fake_kis_factory: Factory, http: requests.Session) -> None:
    by_request = fake_kis_factory(clock=lambda: T0, issue_window_counts="request")
    by_success = fake_kis_factory(clock=lambda: T0)
    for fake in (by_request, by_success):
        issue(http, fake)
        fake.advance(30)
        assert token_request(http, fake).status_code == 403
        fake.advance(31)  # 61 s after the success, 31 s after the rejected request
    assert token_request(http, by_request).json()["error_code"] == "EGW00133"
    assert token_request(http, by_success).status_code == 200


def test_invalid_app_key_and_secret(fixed: FakeKIS, http: requests.Session) -> None:
    r = token_request(http, fixed, appkey="PS" + "x" * 34)
    assert r.status_code == 403
    assert r.json() == {"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"}
    r = token_request(http, fixed, appsecret="wrong")
    assert r.status_code == 403
    assert r.json() == {"error_description": "유효하지 않은 AppSecret입니다.", "error_code": "EGW00105"}
    # Rejected credentials do not open a window: a correct request right after succeeds.
    assert token_request(http, fixed).status_code == 200
    assert fixed.stats.tokenp_rejected == {"EGW00103": 1, "EGW00105": 1}


def test_apps_have_separate_windows_and_tokens(fixed: FakeKIS, http: requests.Session) -> None:
    fixed.add_app("PS" + "b" * 34, "s" * 180)
    a = issue(http, fixed)
    r = token_request(http, fixed, appkey="PS" + "b" * 34, appsecret="s" * 180)
    assert r.status_code == 200
    b = r.json()["access_token"]
    assert a != b
    assert jwt_claims(b)["sub"] == "PS" + "b" * 34
    # A token is only good with its own app key.
    assert rest(http, fixed, b).json()["msg_cd"] == "EGW00121"
    assert rest(http, fixed, b, appkey="PS" + "b" * 34).json()["rt_cd"] == "0"


def test_bad_token_request_body(fixed: FakeKIS, http: requests.Session) -> None:
    r = http.post(f"{fixed.url}/oauth2/tokenP", data=b"not json", timeout=10)
    assert r.status_code == 400
    assert r.json()["error_code"] == "FAKE400"
    r = http.post(
        f"{fixed.url}/oauth2/tokenP",
        json={"grant_type": "password", "appkey": fixed.app_key, "appsecret": fixed.app_secret},
        timeout=10,
    )
    assert r.status_code == 400
    assert fixed.stats.tokens_issued == 0


# -- revocation and dead tokens ----------------------------------------------------------


def test_revoke_kills_the_token(fixed: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fixed)
    assert rest(http, fixed, token).json()["rt_cd"] == "0"
    r = http.post(
        f"{fixed.url}/oauth2/revokeP",
        json={"appkey": fixed.app_key, "appsecret": fixed.app_secret, "token": token},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.json() == {"code": 200, "message": "접근토큰 폐기에 성공하였습니다."}
    assert isinstance(r.json()["code"], int)
    dead = rest(http, fixed, token)
    assert dead.status_code == 500
    assert dead.json() == {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": "유효하지 않은 token 입니다."}
    # After the window a revoked token is not handed back: a new one is minted.
    fixed.advance(61)
    assert issue(http, fixed) != token
    assert fixed.stats.revoke_requests == 1
    assert fixed.stats.rest_rejected == {"EGW00121": 1}


def test_revoke_rejects_foreign_or_unknown_tokens(fixed: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fixed)
    fixed.add_app("PS" + "c" * 34, "t" * 180)
    r = http.post(
        f"{fixed.url}/oauth2/revokeP",
        json={"appkey": "PS" + "c" * 34, "appsecret": "t" * 180, "token": token},
        timeout=10,
    )
    assert r.status_code == 403
    assert rest(http, fixed, token).json()["rt_cd"] == "0"


def test_revoke_all_and_expire_all(fixed: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fixed)
    fixed.expire_all()
    r = rest(http, fixed, token)
    assert r.status_code == 500
    assert r.json() == {"rt_cd": "1", "msg_cd": "EGW00123", "msg1": "기간이 만료된 token 입니다."}
    fixed.revoke_all()
    assert rest(http, fixed, token).json()["msg_cd"] == "EGW00121"
    fixed.advance(61)
    fresh = issue(http, fixed)  # an expired current token is never re-answered
    assert fresh != token
    assert rest(http, fixed, fresh).json()["rt_cd"] == "0"


def test_token_expires_with_the_clock(fake_kis_factory: Factory, http: requests.Session) -> None:
    fake = fake_kis_factory(clock=lambda: T0, dead_token_status=200)
    token = issue(http, fake)
    fake.advance(86400 - 1)
    assert rest(http, fake, token).json()["rt_cd"] == "0"
    fake.advance(1)  # exactly the instant in access_token_token_expired
    r = rest(http, fake, token)
    assert r.status_code == 200  # dead_token_status switch
    assert r.json()["msg_cd"] == "EGW00123"


def test_unknown_token_and_missing_bearer(fixed: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fixed)
    assert rest(http, fixed, "eyJ.not.issued").json()["msg_cd"] == "EGW00121"
    r = rest(http, fixed, token, bearer="")
    assert r.status_code == 500
    assert r.json() == {"rt_cd": "1", "msg_cd": "EGW00205", "msg1": "credentials_type이 유효하지 않습니다.(Bearer)"}


def test_new_token_revokes_old_switch(fake_kis_factory: Factory, http: requests.Session) -> None:
    for revokes in (False, True):
        fake = fake_kis_factory(clock=lambda: T0, new_token_revokes_old=revokes, same_token_window=0)
        old = issue(http, fake)
        fake.advance(61)
        new = issue(http, fake)
        assert new != old
        assert rest(http, fake, new).json()["rt_cd"] == "0"
        expected = "EGW00121" if revokes else "MCA00000"
        assert rest(http, fake, old).json()["msg_cd"] == expected


# -- rate limit ------------------------------------------------------------------------------


def test_per_second_limit(fake_kis_factory: Factory, http: requests.Session) -> None:
    fake = fake_kis_factory(clock=lambda: T0, rest_rate_limit=5)
    token = issue(http, fake)
    answers = [rest(http, fake, token) for _ in range(8)]
    assert [a.json()["rt_cd"] for a in answers] == ["0"] * 5 + ["1"] * 3
    assert answers[-1].status_code == 500
    assert answers[-1].json() == {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다."}
    fake.advance(0.999)
    assert rest(http, fake, token).json()["msg_cd"] == "EGW00201"
    fake.advance(0.002)  # the five accepted calls are now more than a second old
    assert rest(http, fake, token).json()["rt_cd"] == "0"
    assert fake.stats.rest_requests == 10
    assert fake.stats.rest_rejected == {"EGW00201": 4}


def test_rate_limit_is_per_app_key(fake_kis_factory: Factory, http: requests.Session) -> None:
    fake = fake_kis_factory(clock=lambda: T0, rest_rate_limit=2)
    fake.add_app("PS" + "d" * 34, "u" * 180)
    a = issue(http, fake)
    b = token_request(http, fake, appkey="PS" + "d" * 34, appsecret="u" * 180).json()["access_token"]
    assert [rest(http, fake, a).json()["rt_cd"] for _ in range(3)] == ["0", "0", "1"]
    assert rest(http, fake, b, appkey="PS" + "d" * 34).json()["rt_cd"] == "0"


# -- faults -----------------------------------------------------------------------------------


def test_fault_http500_and_egw_shapes_in_order(fixed: FakeKIS, http: requests.Session) -> None:
    fixed.set_token_fault("http500")
    fixed.set_token_fault(TokenFault.EGW00105)
    fixed.set_token_fault("EGW00103")
    fixed.set_token_fault("EGW00133", times=2)
    r = token_request(http, fixed)
    assert r.status_code == 500
    assert r.json()["error_code"] == "FAKE500"
    r = token_request(http, fixed)
    assert (r.status_code, r.json()["error_code"]) == (403, "EGW00105")
    assert r.json()["error_description"] == "유효하지 않은 AppSecret입니다."
    r = token_request(http, fixed)
    assert (r.status_code, r.json()["error_code"]) == (403, "EGW00103")
    for _ in range(2):
        r = token_request(http, fixed)
        assert r.status_code == 403
        assert r.json() == {"error_description": MSG_133, "error_code": "EGW00133"}
    assert token_request(http, fixed).status_code == 200  # queue drained; faults did not open a window
    stats = fixed.stats
    assert stats.tokenp_requests == 6
    assert stats.tokens_issued == 1
    assert stats.tokenp_faults == {"http500": 1, "EGW00105": 1, "EGW00103": 1, "EGW00133": 2}
    assert stats.tokenp_rejected == {"FAKE500": 1, "EGW00105": 1, "EGW00103": 1, "EGW00133": 2}


def test_fault_malformed(fixed: FakeKIS, http: requests.Session) -> None:
    fixed.set_token_fault("malformed")
    r = token_request(http, fixed)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert token_request(http, fixed).json()["token_type"] == "Bearer"


def test_fault_until_cleared(fixed: FakeKIS, http: requests.Session) -> None:
    fixed.set_token_fault("http500", times=None)
    assert [token_request(http, fixed).status_code for _ in range(4)] == [500] * 4
    fixed.clear_faults()
    assert token_request(http, fixed).status_code == 200


def test_fault_delay_answers_normally_later(fixed: FakeKIS, http: requests.Session) -> None:
    fixed.set_token_fault("delay", delay=0.3)
    started = time.monotonic()
    r = token_request(http, fixed)
    assert time.monotonic() - started >= 0.3
    assert r.status_code == 200
    assert fixed.stats.tokenp_faults == {"delay": 1}


def test_fault_timeout_closes_without_answer(fixed: FakeKIS, http: requests.Session) -> None:
    fixed.set_token_fault("timeout", delay=0.2)
    with pytest.raises(requests.ConnectionError):
        token_request(http, fixed, timeout=(5, 10))
    assert fixed.stats.tokenp_success == 0
    assert fixed.stats.tokens_issued == 0
    assert token_request(http, fixed).status_code == 200  # one fault, one request


def test_fault_timeout_hits_client_read_timeout(fixed: FakeKIS, http: requests.Session) -> None:
    fixed.set_token_fault("timeout", delay=30)
    with pytest.raises(requests.ReadTimeout):
        token_request(http, fixed, timeout=(5, 0.3))


def test_stop_is_prompt_while_a_timeout_fault_holds_a_connection(fake_kis_factory: Factory) -> None:
    fake = fake_kis_factory()
    fake.set_token_fault("timeout")  # default hold: 30 s
    outcome: list[BaseException] = []

    def client() -> None:
        with session() as s:
            try:
                token_request(s, fake, timeout=(5, 60))
            except requests.RequestException as exc:
                outcome.append(exc)

    worker = threading.Thread(target=client)
    worker.start()
    fake.wait_for_stats(lambda s: s.tokenp_requests == 1)
    # An idle keep-alive connection must not hold stop() either.
    idle = session()
    idle.get(f"{fake.url}/__fake__/stats", timeout=10)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 5
    worker.join(10)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.ConnectionError)
    idle.close()


def test_slow_issuance_does_not_block_other_endpoints(fake_kis_factory: Factory) -> None:
    fake = fake_kis_factory(token_delay=30)
    done = threading.Event()

    def slow_client() -> None:
        with session() as s, pytest.raises(requests.ConnectionError):
            token_request(s, fake, timeout=(5, 60))
        done.set()

    worker = threading.Thread(target=slow_client)
    worker.start()
    fake.wait_for_stats(lambda s: s.tokenp_requests == 1)  # counted on arrival, before the delay
    with session() as s:
        r = s.post(
            f"{fake.url}/uapi/hashkey",
            json={"a": 1},
            headers={"appkey": fake.app_key, "appsecret": fake.app_secret},
            timeout=5,
        )
    assert r.status_code == 200
    assert not done.is_set()
    assert fake.stats.tokenp_success == 0
    fake.stop()  # wakes the waiting request, which is dropped
    worker.join(10)
    assert done.is_set()


def test_invalid_fault_arguments(fake_kis: FakeKIS) -> None:
    with pytest.raises(ValueError):
        fake_kis.set_token_fault("nonsense")
    with pytest.raises(ValueError):
        fake_kis.set_token_fault("http500", times=0)
    with pytest.raises(ValueError):
        fake_kis.advance(-1)
    with pytest.raises(ValueError):
        FakeKIS(issue_window_counts="sometimes")
    with pytest.raises(ValueError):
        FakeKIS(rest_rate_limit=0)


# -- hashkey, approval --------------------------------------------------------------------


def test_hashkey(fake_kis: FakeKIS, http: requests.Session) -> None:
    order = {"CANO": "12345678", "ACNT_PRDT_CD": "01", "PDNO": "005930", "ORD_QTY": "1", "ORD_UNPR": "0"}
    raw = json.dumps(order).encode()
    r = http.post(
        f"{fake_kis.url}/uapi/hashkey",
        data=raw,
        headers={"content-type": "application/json", "appkey": fake_kis.app_key, "appsecret": fake_kis.app_secret},
        timeout=10,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["BODY"] == order
    assert body["HASH"] == hashlib.sha256(raw).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", body["HASH"])
    bad = http.post(f"{fake_kis.url}/uapi/hashkey", data=raw, headers={"appkey": fake_kis.app_key}, timeout=10)
    assert bad.json()["error_code"] == "EGW00105"
    assert fake_kis.stats.hashkey_requests == 2


def test_approval(fake_kis: FakeKIS, http: requests.Session) -> None:
    good = {"grant_type": "client_credentials", "appkey": fake_kis.app_key, "secretkey": fake_kis.app_secret}
    r = http.post(f"{fake_kis.url}/oauth2/Approval", json=good, timeout=10)
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", r.json()["approval_key"])
    wrong_field = {"grant_type": "client_credentials", "appkey": fake_kis.app_key, "appsecret": fake_kis.app_secret}
    r = http.post(f"{fake_kis.url}/oauth2/Approval", json=wrong_field, timeout=10)
    assert (r.status_code, r.json()["error_code"]) == (403, "EGW00105")
    assert fake_kis.stats.approval_requests == 2


# -- quotations -------------------------------------------------------------------------------

QUOTES = [
    (PRICE, "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "000660"}, "stck_prpr"),
    ("/uapi/etfetn/v1/quotations/inquire-price", "FHPST02400000", PRICE_QUERY | {"FID_INPUT_ISCD": "069500"}, "nav"),
    (
        "/uapi/overseas-price/v1/quotations/price-detail",
        "HHDFS76200200",
        {"AUTH": "", "EXCD": "NAS", "SYMB": "AAPL"},
        "last",
    ),
    ("/uapi/domestic-stock/v1/quotations/search-info", "CTPF1604R", {"PDNO": "005930", "PRDT_TYPE_CD": "300"}, "pdno"),
    (
        "/uapi/domestic-stock/v1/quotations/search-stock-info",
        "CTPF1002R",
        {"PDNO": "005930", "PRDT_TYPE_CD": "300"},
        "prdt_name",
    ),
]


@pytest.mark.parametrize(("path", "tr_id", "params", "field"), QUOTES)
def test_quotation_endpoints(
    fake_kis: FakeKIS, http: requests.Session, path: str, tr_id: str, params: dict[str, str], field: str
) -> None:
    token = issue(http, fake_kis)
    r = rest(http, fake_kis, token, path=path, tr_id=tr_id, params=params)
    assert r.status_code == 200
    body = r.json()
    assert (body["rt_cd"], body["msg_cd"], body["msg1"]) == ("0", "MCA00000", "정상처리 되었습니다.")
    assert r.headers["tr_id"] == tr_id
    output = body["output"]
    assert output[field] != ""
    assert all(isinstance(v, str) for v in output.values())
    assert rest(http, fake_kis, token, path=path, tr_id=tr_id, params=params).json() == body  # deterministic
    wrong = rest(http, fake_kis, token, path=path, tr_id="XXXX0000", params=params)
    assert wrong.status_code == 500
    assert wrong.json()["rt_cd"] == "1"


def test_domestic_price_is_plausible(fake_kis: FakeKIS, http: requests.Session) -> None:
    out = rest(http, fake_kis, issue(http, fake_kis)).json()["output"]
    price, base = int(out["stck_prpr"]), int(out["stck_sdpr"])
    assert int(out["prdy_vrss"]) == price - base
    assert int(out["stck_llam"]) <= int(out["stck_lwpr"]) <= price <= int(out["stck_hgpr"]) <= int(out["stck_mxpr"])
    assert out["stck_shrn_iscd"] == "005930"


def test_search_info_classifies_etfs(fake_kis: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fake_kis)

    def clsf(pdno: str, kind: str = "300") -> str:
        r = rest(
            http,
            fake_kis,
            token,
            path="/uapi/domestic-stock/v1/quotations/search-info",
            tr_id="CTPF1604R",
            params={"PDNO": pdno, "PRDT_TYPE_CD": kind},
        )
        name: str = r.json()["output"]["prdt_clsf_name"]
        return name

    assert clsf("069500") == "ETF"
    assert clsf("360750") == "ETF"
    assert clsf("005930") == "주권"
    assert clsf("SPY", "529") == "ETF"
    assert clsf("AAPL", "513") == ""  # AAPL is not a NYSE product


def test_overseas_unknown_pair_is_success_with_empty_fields(fake_kis: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fake_kis)
    path = "/uapi/overseas-price/v1/quotations/price-detail"
    for excd, symb in (("NYS", "AAPL"), ("NAS", "NOSUCH")):
        r = rest(http, fake_kis, token, path=path, tr_id="HHDFS76200200", params={"EXCD": excd, "SYMB": symb})
        body = r.json()
        assert (r.status_code, body["rt_cd"]) == (200, "0")
        assert body["output"]
        assert set(body["output"].values()) == {""}


def test_missing_query_field_and_unknown_path(fake_kis: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fake_kis)
    r = rest(http, fake_kis, token, params={"FID_COND_MRKT_DIV_CODE": "J"})
    assert r.json()["rt_cd"] == "1"
    assert "FID_INPUT_ISCD" in r.json()["msg1"]
    r = http.get(f"{fake_kis.url}/uapi/domestic-stock/v1/quotations/nope", timeout=10)
    assert r.status_code == 404
    assert r.json()["rt_cd"] == "1"
    r = http.get(f"{fake_kis.url}/oauth2/tokenP", timeout=10)
    assert r.status_code == 405


# -- HTTP behaviour ---------------------------------------------------------------------------


def test_keep_alive_and_content_length(fake_kis: FakeKIS) -> None:
    host, port = fake_kis.url.removeprefix("http://").split(":")
    conn = HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/__fake__/stats")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert resp.getheader("Content-Length") == str(len(body))
            assert not resp.will_close
        first_socket = conn.sock
        conn.request("GET", "/__fake__/stats")
        conn.getresponse().read()
        assert conn.sock is first_socket  # the same TCP connection served every request
    finally:
        conn.close()


def test_many_simultaneous_connections(fake_kis_factory: Factory) -> None:
    fake = fake_kis_factory()
    n = 256
    barrier = threading.Barrier(n)

    def one(_: int) -> int:
        with session() as s:
            barrier.wait()
            return token_request(s, fake, timeout=30).status_code

    with ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(one, range(n)))
    assert sorted(codes) == [200] + [403] * (n - 1)
    assert fake.stats.tokens_issued == 1


# -- control endpoints ------------------------------------------------------------------------


def test_control_endpoints(fixed: FakeKIS, http: requests.Session) -> None:
    token = issue(http, fixed)
    stats = http.get(f"{fixed.url}/__fake__/stats", timeout=10).json()
    assert stats["tokens_issued"] == 1
    assert stats["tokenp_rejected"] == {}
    assert stats["last_issued_at"] == T0

    r = control(http, fixed, action="advance", seconds=61)
    assert r.json() == {"ok": True, "now": T0 + 61}
    assert fixed.now() == T0 + 61

    assert control(http, fixed, action="expire_all").status_code == 200
    assert rest(http, fixed, token).json()["msg_cd"] == "EGW00123"
    assert control(http, fixed, action="revoke_all").status_code == 200
    assert rest(http, fixed, token).json()["msg_cd"] == "EGW00121"

    assert control(http, fixed, action="set_token_fault", kind="http500", times=None).json()["ok"]
    assert token_request(http, fixed).status_code == 500
    assert token_request(http, fixed).status_code == 500
    assert control(http, fixed, action="clear_faults").json()["ok"]

    assert control(http, fixed, action="set", field="issue_window", value=0).json()["ok"]
    assert control(http, fixed, action="set", field="rest_rate_limit", value=1).json()["ok"]
    fresh = issue(http, fixed)
    assert issue(http, fixed) == fresh  # window 0: same token at once
    assert rest(http, fixed, fresh).json()["rt_cd"] == "0"
    assert rest(http, fixed, fresh).json()["msg_cd"] == "EGW00201"
    assert control(http, fixed, action="set", field="rest_rate_limit", value=None).json()["ok"]
    assert rest(http, fixed, fresh).json()["rt_cd"] == "0"
    assert control(http, fixed, action="set", field="token_delay", value=0.0).json()["ok"]

    tokens = http.get(f"{fixed.url}/__fake__/tokens", timeout=10).json()["tokens"]
    assert tokens == [token, fresh]

    assert control(http, fixed, action="reset_stats").json()["ok"]
    assert fixed.stats == FakeKISStats()

    for bad in (
        {"action": "fly"},
        {"action": "set", "field": "port", "value": 1},
        {"action": "set", "field": "token_delay", "value": -1},
        {"action": "advance"},
        {"action": "set_token_fault", "kind": "boom"},
    ):
        r = control(http, fixed, **bad)
        assert r.status_code == 400
        assert r.json()["ok"] is False


# -- concurrency -------------------------------------------------------------------------------


def test_counters_are_exact_under_50_threads(fake_kis_factory: Factory) -> None:
    fake = fake_kis_factory(clock=lambda: T0)
    n, per_thread = 50, 10
    barrier = threading.Barrier(n)
    tokens: list[str] = []
    lock = threading.Lock()

    def worker(_: int) -> list[int]:
        with session() as s:
            barrier.wait()
            r = token_request(s, fake)
            if r.status_code == 200:
                with lock:
                    tokens.append(r.json()["access_token"])
            barrier.wait()  # everyone has tried; exactly one holds the token
            token = tokens[0]
            codes = [rest(s, fake, token).status_code for _ in range(per_thread)]
            s.post(
                f"{fake.url}/uapi/hashkey",
                json={"i": 1},
                headers={"appkey": fake.app_key, "appsecret": fake.app_secret},
                timeout=10,
            )
            return [r.status_code, *codes]

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(worker, range(n)))
    assert len(tokens) == 1
    assert sorted(r[0] for r in results) == [200] + [403] * (n - 1)
    assert all(code == 200 for r in results for code in r[1:])
    stats = fake.stats
    assert stats.tokenp_requests == n
    assert stats.tokens_issued == 1
    assert stats.tokenp_success == 1
    assert stats.tokenp_rejected == {"EGW00133": n - 1}
    assert stats.rest_requests == n * per_thread
    assert stats.rest_rejected == {}
    assert stats.hashkey_requests == n


# -- the process entry point -----------------------------------------------------------------


def test_module_runs_as_a_process() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "korea_investment_stock.testing", "--port", "0", "--rest-rate-limit", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        assert set(info) == {"url", "app_key", "app_secret"}
        assert info["url"].startswith("http://127.0.0.1:")
        with session() as s:
            body = {"grant_type": "client_credentials", "appkey": info["app_key"], "appsecret": info["app_secret"]}
            r = s.post(info["url"] + "/oauth2/tokenP", json=body, timeout=10)
            assert r.status_code == 200
            assert s.get(info["url"] + "/__fake__/stats", timeout=10).json()["tokens_issued"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""  # quiet: no per-request logging
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the rules without HTTP ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def test_state_rules_without_http() -> None:
    clock = Clock()
    state = KISState(Settings(issue_window=60, same_token_window=100), clock)
    state.add_app("k", "s")
    ask = {"grant_type": "client_credentials", "appkey": "k", "appsecret": "s"}
    first = state.issue_token(ask)
    assert first.status == 200
    clock.t += 59
    assert state.issue_token(ask).body["error_code"] == "EGW00133"
    clock.t += 1
    assert state.issue_token(ask).body == first.body
    clock.t += 60  # 120 s after minting: past same_token_window=100
    assert state.issue_token(ask).body["access_token"] != first.body["access_token"]
    state.advance(1000)
    assert state.now() == clock.t + 1000
    assert state.stats().tokens_issued == 2


def test_state_configure_is_all_or_nothing() -> None:
    state = KISState(Settings(), Clock())
    with pytest.raises(ValueError):
        state.configure(token_delay=1.0, rest_rate_limit=0)
    assert state.settings().token_delay == 0.0
    state.configure(token_delay=1.5)
    assert state.settings().token_delay == 1.5
