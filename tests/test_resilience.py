"""Resilience against the fake KIS server over loopback HTTP, on the file store and on real Redis.

- Dead tokens (``EGW00121`` revoked / ``EGW00123`` expired): 4 processes x 25
  threads that all hold the old token converge on exactly one new issuance,
  and every call succeeds after one retry.
- Revocation by one process is seen by the others.
- ``EGW00133``: bounded wait then success; a clear error naming the rule at the
  deadline; the wait ends as soon as a peer stores a token.
- ``EGW00103``/``EGW00105``: fail at once, one tokenP request, no waiting.
- Network errors: a clear error, and the issuance lock is released.
- ``EGW00201``: bounded retries with growing, jittered pauses, then a clear error.
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from filelock import FileLock, Timeout

from korea_investment_stock import KoreaInvestment
from korea_investment_stock import client as client_module
from korea_investment_stock.errors import (
    InvalidCredentialsError,
    KISConnectionError,
    RateLimitExceededError,
    TokenIssueError,
    TokenRateLimitedError,
)
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.testing.market import domestic_price
from korea_investment_stock.token import storage as storage_module
from korea_investment_stock.token.issuer import DEFAULT_TOKEN_TIMEOUT
from korea_investment_stock.token.record import TokenRecord
from korea_investment_stock.token.storage import DEFAULT_ISSUE_DEADLINE, DEFAULT_WAIT_TIMEOUT, TokenStorage

from .redis_fixtures import redis_prefix, redis_server_url, redis_url  # noqa: F401
from .resilience_workers import ACCOUNT, SYMBOL, dead_token_process

HANG = 60.0
PRICE = domestic_price(SYMBOL)["stck_prpr"]


# ------------------------------------------------------------------------------------------ backends
@dataclass
class Backend:
    """One token store under test, described so a spawned process can open it too."""

    kind: str
    config: dict[str, Any]

    def storage(self, **kwargs: Any) -> TokenStorage:
        if self.kind == "redis":
            from korea_investment_stock.token.redis import LockingRedisTokenStorage

            return LockingRedisTokenStorage(self.config["redis_url"], key_prefix=self.config["key_prefix"], **kwargs)
        kwargs.pop("failure_backoff", None)  # a Redis-only setting
        from korea_investment_stock.token.file import FileTokenStorage

        return FileTokenStorage(self.config["token_file"], **kwargs)

    def lock_is_free(self, api_key: str) -> bool:
        """True when nobody holds the cross-process issuance lock for ``api_key``."""
        if self.kind == "redis":
            import redis

            keys = self.storage().redis_keys(api_key)  # type: ignore[attr-defined]
            client = redis.Redis.from_url(self.config["redis_url"], socket_timeout=5)
            try:
                return not client.exists(keys.lock)
            finally:
                client.close()
        lock = FileLock(self.config["token_file"] + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        lock.release()
        return True


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.real_redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        return Backend("redis", {"storage": "redis", "redis_url": url, "key_prefix": prefix})
    (tmp_path / "kis").mkdir()
    return Backend("file", {"storage": "file", "token_file": str(tmp_path / "kis" / "token.key")})


def client_for(kis: FakeKIS, storage: TokenStorage, **kwargs: Any) -> KoreaInvestment:
    secret = kwargs.pop("api_secret", kis.app_secret)
    key = kwargs.pop("api_key", kis.app_key)
    return KoreaInvestment(key, secret, ACCOUNT, token_storage=storage, base_url=kis.url, **kwargs)


def issue_from_outside(kis: FakeKIS) -> str:
    """A tokenP call by someone who does not use our store: it opens KIS's one-per-window."""
    body = {"grant_type": "client_credentials", "appkey": kis.app_key, "appsecret": kis.app_secret}
    answer = requests.post(kis.url + "/oauth2/tokenP", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def rest_with(kis: FakeKIS, token: str) -> dict[str, Any]:
    """One quotation call with a raw token, bypassing the client."""
    headers = {
        "authorization": f"Bearer {token}",
        "appkey": kis.app_key,
        "appsecret": kis.app_secret,
        "tr_id": "FHKST01010100",
        "custtype": "P",
    }
    params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": SYMBOL}
    answer = requests.get(
        kis.url + "/uapi/domestic-stock/v1/quotations/inquire-price", headers=headers, params=params, timeout=10
    )
    result: dict[str, Any] = answer.json()
    return result


# ---------------------------------------------------------------------- dead tokens, many processes
def run_callers(kis: FakeKIS, backend: Backend, trigger: Any, processes: int, threads: int) -> list[dict[str, Any]]:
    """Start ``processes`` x ``threads`` callers holding the current token, run ``trigger``, release them."""
    config = {**backend.config, "url": kis.url, "app_key": kis.app_key, "app_secret": kis.app_secret}
    config["threads"] = threads
    ctx = multiprocessing.get_context("spawn")
    parties = processes * threads + 1
    ready, go = ctx.Barrier(parties), ctx.Barrier(parties)
    results = ctx.Queue()
    workers = [ctx.Process(target=dead_token_process, args=(config, ready, go, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    reports: list[dict[str, Any]] = []
    try:
        try:
            ready.wait(HANG)  # every caller has built its client and holds the current token
            trigger()
            go.wait(HANG)
        except threading.BrokenBarrierError:
            pass  # a caller failed early; its report says why
        for _ in workers:
            try:
                reports.extend(results.get(timeout=HANG))
            except queue.Empty:
                break
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
    errors = [r["error"] for r in reports if r.get("error")]
    assert not errors, errors[0]
    assert len(reports) == processes * threads
    return reports


@pytest.mark.parametrize("how", ["revoke_all", "expire_all", "revoked_by_one_process"])
def test_dead_token_converges_on_one_issuance_across_processes(
    fake_kis_factory: Any, backend: Backend, how: str
) -> None:
    processes, threads = 4, 25
    kis = fake_kis_factory()  # the real one-per-minute window
    storage = backend.storage()
    with client_for(kis, storage) as first:
        old = first.access_token
        assert kis.stats.tokens_issued == 1

        def kill_the_token() -> None:
            if how == "revoke_all":
                kis.revoke_all()
            elif how == "expire_all":
                kis.expire_all()
            else:
                first.revoke_access_token()  # this process revokes; the others find out on their own
                assert storage.load_token(kis.app_key, kis.app_secret) is None
            kis.advance(61)  # KIS would refuse a second issuance inside the first one's minute

        reports = run_callers(kis, backend, kill_the_token, processes, threads)

        stats = kis.stats
        assert stats.tokenp_requests == 2, stats  # the first issuance and exactly one more
        assert stats.tokens_issued == 2
        dead_code = "EGW00123" if how == "expire_all" else "EGW00121"
        # each of the 100 callers met the dead token exactly once, then succeeded on its one retry
        assert stats.rest_rejected == {dead_code: processes * threads}, stats
        assert stats.rest_requests == 2 * processes * threads
        assert all(r["before"] == old for r in reports)
        new_tokens = {r["after"] for r in reports}
        assert len(new_tokens) == 1 and old not in new_tokens
        assert all(r["ok"] and r["price"] == PRICE for r in reports)
        assert len({r["pid"] for r in reports}) == processes
        if how == "revoked_by_one_process":
            assert stats.revoke_requests == 1
        # the revoking process picks up the fleet's new token without another issuance
        answer = first.fetch_domestic_price("J", SYMBOL)
        assert answer["rt_cd"] == "0"
        assert first.access_token in new_tokens
        assert kis.stats.tokenp_requests == 2


@pytest.mark.parametrize("status", [200, 500])
def test_dead_token_is_recognised_whatever_the_http_status(
    fake_kis_factory: Any, backend: Backend, status: int
) -> None:
    kis = fake_kis_factory(dead_token_status=status, issue_window=0)
    with client_for(kis, backend.storage()) as client:
        old = client.access_token
        kis.expire_all()
        answer = client.fetch_domestic_price("J", SYMBOL)
        assert answer["rt_cd"] == "0" and answer["output"]["stck_prpr"] == PRICE
        assert client.access_token != old
        assert kis.stats.rest_rejected == {"EGW00123": 1}
        assert kis.stats.tokens_issued == 2


def test_a_token_that_stays_dead_is_reported_not_retried_forever(fake_kis_factory: Any, backend: Backend) -> None:
    kis = fake_kis_factory(issue_window=0, new_token_revokes_old=False)
    with client_for(kis, backend.storage()) as client:
        original_issue = client._issuer.issue

        def issue_then_revoke() -> TokenRecord:
            record = original_issue()
            kis.revoke_all()  # KIS hands out a token that is dead on arrival
            return record

        client._issuer.issue = issue_then_revoke  # type: ignore[method-assign]
        kis.revoke_all()
        with pytest.raises(client_module.KISAPIError, match="freshly obtained token too") as caught:
            client.fetch_domestic_price("J", SYMBOL)
        assert caught.value.msg_cd == "EGW00121"
        assert kis.stats.rest_rejected == {"EGW00121": 2}  # the call, and its one retry


def test_revoke_keeps_a_newer_stored_token(fake_kis_factory: Any, backend: Backend) -> None:
    kis = fake_kis_factory(issue_window=0, same_token_window=0)
    storage = backend.storage()
    with client_for(kis, storage) as stale, client_for(kis, backend.storage()) as fresh:
        revoked = stale.access_token.removeprefix("Bearer ")
        fresh.issue_access_token()  # a peer replaced the token meanwhile
        newer = fresh.access_token.removeprefix("Bearer ")
        assert newer != revoked
        answer = stale.revoke_access_token()
        assert answer["code"] == 200
        assert rest_with(kis, revoked)["msg_cd"] == "EGW00121"
        stored = storage.load_token(kis.app_key, kis.app_secret)
        assert stored is not None and stored["access_token"] == newer  # compare-and-delete spared it
        assert rest_with(kis, newer)["rt_cd"] == "0"


# ------------------------------------------------------------------------------------------ EGW00133
def test_egw00133_waits_within_the_deadline_then_succeeds(fake_kis_factory: Any, backend: Backend) -> None:
    kis = fake_kis_factory(issue_window=2.0)
    outside = issue_from_outside(kis)  # someone else's issuance opened the window
    started = time.monotonic()
    with client_for(kis, backend.storage()) as client:
        elapsed = time.monotonic() - started
        assert client.access_token == f"Bearer {outside}"  # KIS re-answers the same token within 6 h
        assert client.fetch_domestic_price("J", SYMBOL)["rt_cd"] == "0"
    stats = kis.stats
    assert stats.tokenp_rejected.get("EGW00133", 0) >= 1
    assert stats.tokenp_requests <= 1 + 4  # backoff 1 s, 2 s, ...: a handful of tries, not a hammering
    assert elapsed < DEFAULT_ISSUE_DEADLINE / 2


def test_egw00133_past_the_deadline_names_the_one_per_minute_rule(fake_kis_factory: Any, backend: Backend) -> None:
    kis = fake_kis_factory()  # a 60 s window
    issue_from_outside(kis)
    storage = backend.storage(issue_deadline=1.0, failure_backoff=0)
    started = time.monotonic()
    with pytest.raises(TokenRateLimitedError) as caught:
        client_for(kis, storage)
    elapsed = time.monotonic() - started
    assert elapsed < 10.0
    assert "one token issuance per minute" in str(caught.value) and "EGW00133" in str(caught.value)
    assert caught.value.code == "EGW00133"
    assert 2 <= kis.stats.tokenp_requests <= 4
    assert backend.lock_is_free(kis.app_key)
    kis.advance(60)
    with client_for(kis, backend.storage()) as client:  # the window reopened: nothing is stuck
        assert client.fetch_domestic_price("J", SYMBOL)["rt_cd"] == "0"


class MemoryStorage(TokenStorage):
    """The smallest custom store: only the four 0.6.x methods."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def save_token(self, token_data: dict[str, Any]) -> bool:
        self.data[token_data["api_key"]] = dict(token_data)
        return True

    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        entry = self.data.get(api_key)
        return dict(entry) if entry is not None and entry["api_secret"] == api_secret else None

    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        record = self.stored_record(api_key, api_secret)
        return record is not None and record.is_valid(self.refresh_margin)

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        return self.data.pop(api_key, None) is not None


def test_egw00133_wait_ends_when_a_peer_stores_a_token(fake_kis: FakeKIS, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = issue_from_outside(fake_kis)
    storage = MemoryStorage()
    pauses: list[float] = []

    def peer_stores_during_the_pause(seconds: float) -> None:
        pauses.append(seconds)
        body = {"access_token": outside, "access_token_token_expired": "2099-01-01 00:00:00"}
        record = TokenRecord.from_issue_response(body, fake_kis.app_key, fake_kis.app_secret)
        storage.save_token(record.to_legacy_dict(fake_kis.app_secret))

    monkeypatch.setattr(
        storage_module, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=peer_stores_during_the_pause)
    )
    with client_for(fake_kis, storage) as client:
        assert client.access_token == f"Bearer {outside}"
    assert len(pauses) == 1 and 0.5 <= pauses[0] <= 1.5
    assert fake_kis.stats.tokenp_requests == 2  # the outside one and ours: no retry once the peer's token is there


# ------------------------------------------------------------------------- credentials and network
@pytest.mark.parametrize(
    ("code", "wrong"), [("EGW00105", "api_secret"), ("EGW00103", "api_key")], ids=["bad-secret", "bad-key"]
)
def test_bad_credentials_fail_at_once(fake_kis: FakeKIS, backend: Backend, code: str, wrong: str) -> None:
    bad_value = "wrong-" + ("x" * 30 if wrong == "api_key" else "secret-never-printed-" + "y" * 100)
    storage = backend.storage()
    started = time.monotonic()
    with pytest.raises(InvalidCredentialsError) as caught:
        client_for(fake_kis, storage, **{wrong: bad_value})
    assert time.monotonic() - started < 5.0
    assert fake_kis.stats.tokenp_requests == 1
    assert fake_kis.stats.tokenp_rejected == {code: 1}
    assert caught.value.code == code and code in str(caught.value)
    assert "retrying cannot help" in str(caught.value)
    assert bad_value not in str(caught.value) and fake_kis.app_secret not in str(caught.value)
    assert backend.lock_is_free(fake_kis.app_key if wrong == "api_secret" else bad_value)


def test_egw00105_from_kis_fails_every_waiting_thread_with_one_request(fake_kis: FakeKIS, backend: Backend) -> None:
    fake_kis.set_token_fault("EGW00105", times=None, delay=2.0)  # a slow answer: the others pile up behind it
    storage = backend.storage()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def caller() -> None:
        barrier.wait(HANG)
        try:
            client_for(fake_kis, storage)
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    assert time.monotonic() - started < 8.0  # the 2 s answer, and no wait or retry after it
    assert len(errors) == 8 and all(isinstance(e, InvalidCredentialsError) for e in errors)
    # the threads that arrived while the request was in flight shared its answer; none retried
    assert fake_kis.stats.tokenp_requests == 1
    assert fake_kis.stats.tokenp_faults == {"EGW00105": 1}


def test_unreachable_host_is_a_clear_error_and_releases_the_lock(fake_kis: FakeKIS, backend: Backend) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    storage = backend.storage(failure_backoff=0)
    started = time.monotonic()
    with pytest.raises(TokenIssueError, match="cannot reach tokenP") as caught:
        KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, token_storage=storage, base_url=dead_url)
    assert time.monotonic() - started < 10.0
    assert fake_kis.app_secret not in str(caught.value)
    assert backend.lock_is_free(fake_kis.app_key)
    with client_for(fake_kis, storage) as client:  # the same store, right away: nothing is stuck
        assert client.fetch_domestic_price("J", SYMBOL)["rt_cd"] == "0"


def test_tokenp_that_never_answers_times_out_and_releases_the_lock(fake_kis: FakeKIS, backend: Backend) -> None:
    fake_kis.set_token_fault("timeout", times=1, delay=10.0)
    storage = backend.storage(failure_backoff=0)
    started = time.monotonic()
    with pytest.raises(TokenIssueError, match=r"did not answer within 0\.5s"):
        client_for(fake_kis, storage, timeout=(1.0, 0.5))
    assert time.monotonic() - started < 5.0
    assert backend.lock_is_free(fake_kis.app_key)
    with client_for(fake_kis, storage) as client:
        assert client.fetch_domestic_price("J", SYMBOL)["rt_cd"] == "0"
    assert fake_kis.stats.tokenp_requests == 2


def test_rest_call_to_a_vanished_host_is_a_connection_error(fake_kis_factory: Any, backend: Backend) -> None:
    kis = fake_kis_factory()
    client = client_for(kis, backend.storage(), timeout=(1.0, 2.0))
    kis.stop()
    started = time.monotonic()
    with client, pytest.raises(KISConnectionError, match="cannot reach"):
        client.fetch_domestic_price("J", SYMBOL)
    assert time.monotonic() - started < 5.0


def test_documented_timeout_defaults(fake_kis: FakeKIS, backend: Backend) -> None:
    storage = backend.storage()
    assert DEFAULT_TOKEN_TIMEOUT == (3.05, 10.0)
    assert (storage.issue_deadline, storage.wait_timeout) == (DEFAULT_ISSUE_DEADLINE, DEFAULT_WAIT_TIMEOUT) == (70, 90)
    with client_for(fake_kis, storage) as client:
        assert client.timeout == client_module.DEFAULT_TIMEOUT == (3.05, 10.0)
        assert client._issuer.timeout == client.timeout
        assert client.rate_limit_retries == client_module.DEFAULT_RATE_LIMIT_RETRIES == 3


# ------------------------------------------------------------------------------------------ EGW00201
def recording_sleep(monkeypatch: pytest.MonkeyPatch, then: Any = None) -> list[float]:
    """Replace the client's sleep: record each pause, run ``then`` instead of waiting."""
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if then is not None:
            then()

    monkeypatch.setattr(client_module, "time", types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    return pauses


def test_egw00201_is_retried_after_a_pause_then_succeeds(
    fake_kis_factory: Any, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    kis = fake_kis_factory(rest_rate_limit=1)
    pauses = recording_sleep(monkeypatch, then=lambda: kis.advance(1.0))  # the pause lets a second pass
    with client_for(kis, backend.storage()) as client:
        assert client.fetch_domestic_price("J", SYMBOL)["rt_cd"] == "0"
        answer = client.fetch_domestic_price("J", SYMBOL)  # the second call in the same second
    assert answer["rt_cd"] == "0" and answer["output"]["stck_prpr"] == PRICE
    assert kis.stats.rest_rejected == {"EGW00201": 1}
    assert len(pauses) == 1
    assert client_module.RATE_LIMIT_BACKOFF * 0.5 <= pauses[0] <= client_module.RATE_LIMIT_BACKOFF * 1.5


def test_egw00201_gives_up_after_bounded_jittered_retries(
    fake_kis_factory: Any, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    kis = fake_kis_factory(rest_rate_limit=1)
    pauses = recording_sleep(monkeypatch)  # time never passes: KIS keeps refusing
    with client_for(kis, backend.storage(), rate_limit_retries=4) as client:
        assert client.fetch_domestic_price("J", SYMBOL)["rt_cd"] == "0"
        with pytest.raises(RateLimitExceededError, match="EGW00201") as caught:
            client.fetch_domestic_price("J", SYMBOL)
    assert caught.value.msg_cd == "EGW00201"
    assert kis.stats.rest_rejected == {"EGW00201": 5}  # the call and 4 retries
    assert len(pauses) == 4
    base = client_module.RATE_LIMIT_BACKOFF
    for attempt, pause in enumerate(pauses):  # exponential backoff with +-50 % jitter
        assert base * 2**attempt * 0.5 <= pause <= base * 2**attempt * 1.5
    assert len(set(pauses)) == 4


def test_other_kis_errors_come_back_as_the_dict(fake_kis: FakeKIS, backend: Backend) -> None:
    with client_for(fake_kis, backend.storage()) as client:
        answer = client.request(
            "GET",
            "/uapi/domestic-stock/v1/quotations/inquire-price",
            "NOT-A-TR-ID",
            params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": SYMBOL},
        )
    assert answer["rt_cd"] == "1" and answer["msg_cd"] == "OPSQ0002"
    assert fake_kis.stats.rest_requests == 1  # returned as is: no retry, no token replacement
    assert fake_kis.stats.tokenp_requests == 1
