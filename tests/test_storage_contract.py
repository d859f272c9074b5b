"""The TokenStorage contract: a custom store with only the four methods gets single flight for free."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from korea_investment_stock.errors import (
    InvalidCredentialsError,
    KoreaInvestmentError,
    TokenIssueError,
    TokenRateLimitedError,
)
from korea_investment_stock.token.record import DEFAULT_REFRESH_MARGIN
from korea_investment_stock.token.storage import DEFAULT_ISSUE_DEADLINE, DEFAULT_WAIT_TIMEOUT, TokenStorage

from .workers import API_KEY, API_SECRET, CountingIssuer, DictStorage, make_record, run_together

HANG = 60.0


def stampede(storage: TokenStorage, n: int, issue, api_key: str = API_KEY, api_secret: str = API_SECRET):
    """``n`` threads released together by a barrier, each calling ``get_token``."""
    return run_together(n, lambda i: storage.get_token(api_key, api_secret, issue), HANG)


def rate_limited() -> TokenRateLimitedError:
    return TokenRateLimitedError("EGW00133", code="EGW00133", status=403)


# ----------------------------------------------------------------------------------- the contract
def test_abstract_methods_are_exactly_the_four():
    assert TokenStorage.__abstractmethods__ == {"save_token", "load_token", "check_token_valid", "delete_token"}
    with pytest.raises(TypeError):
        TokenStorage()  # type: ignore[abstract]


def test_custom_storage_without_super_init_has_finite_defaults():
    storage = DictStorage()
    assert storage.refresh_margin == DEFAULT_REFRESH_MARGIN
    assert 0 < storage.issue_deadline == DEFAULT_ISSUE_DEADLINE < float("inf")
    assert 0 < storage.wait_timeout == DEFAULT_WAIT_TIMEOUT < float("inf")


@pytest.mark.parametrize("name", ["refresh_margin", "issue_deadline", "wait_timeout"])
@pytest.mark.parametrize("value", [-1, True, "5", float("nan"), float("inf")])
def test_settings_are_validated(name, value):
    # NaN would make every token look expired; infinity would break Event.wait.
    class Configured(DictStorage):
        def __init__(self, **kwargs):
            TokenStorage.__init__(self, **kwargs)
            DictStorage.__init__(self)

    with pytest.raises(ValueError):
        Configured(**{name: value})


def test_settings_override_per_instance():
    class Configured(DictStorage):
        def __init__(self, **kwargs):
            TokenStorage.__init__(self, **kwargs)
            DictStorage.__init__(self)

    storage = Configured(refresh_margin=10, issue_deadline=1.5, wait_timeout=2)
    assert (storage.refresh_margin, storage.issue_deadline, storage.wait_timeout) == (10.0, 1.5, 2.0)
    assert DictStorage().refresh_margin == DEFAULT_REFRESH_MARGIN


# -------------------------------------------------------------------------------- single flight
def test_fifty_threads_one_issue_call(counting_followers):
    storage = DictStorage()
    n = 50
    # Hold the leader inside tokenP until every other thread waits on its flight.
    issuer = CountingIssuer(gate=lambda: counting_followers(n - 1))
    results, errors = stampede(storage, n, issuer)
    assert errors == [None] * n
    assert issuer.calls == 1
    assert storage.saves == 1
    assert len({r.access_token for r in results}) == 1
    stored = storage.data[API_KEY]
    assert stored["access_token"] == results[0].access_token
    assert set(stored) == {"access_token", "access_token_token_expired", "timestamp", "api_key", "api_secret"}
    assert stored["api_secret"] == API_SECRET


def test_valid_stored_token_means_no_issue_call():
    storage = DictStorage()
    storage.save_token(make_record("eyJ.stored.sig").to_legacy_dict(API_SECRET))
    issuer = CountingIssuer()
    results, errors = stampede(storage, 20, issuer)
    assert errors == [None] * 20
    assert issuer.calls == 0
    assert {r.access_token for r in results} == {"eyJ.stored.sig"}


def test_followers_share_the_leaders_error(counting_followers):
    storage = DictStorage()
    n = 30
    error = InvalidCredentialsError("bad key", code="EGW00103", status=403)
    issuer = CountingIssuer(gate=lambda: counting_followers(n - 1), errors=[error])
    results, errors = stampede(storage, n, issuer)
    assert issuer.calls == 1  # a permanent error is not retried, and followers do not retry it either
    assert sum(e is error for e in errors) == 1  # the leader's own; each follower has a copy of it
    assert all(type(e) is InvalidCredentialsError and e.code == "EGW00103" and str(e) == "bad key" for e in errors)
    assert all(e.__cause__ is error for e in errors if e is not error)
    assert len({id(e) for e in errors}) == n
    assert storage.saves == 0
    # The failure is not cached: the next caller tries again.
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 2 and record.access_token


def test_token_within_the_refresh_margin_is_replaced():
    storage = DictStorage()
    storage.save_token(
        make_record("eyJ.nearly-dead.sig", lifetime=DEFAULT_REFRESH_MARGIN - 30).to_legacy_dict(API_SECRET)
    )
    issuer = CountingIssuer()
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1
    assert record.access_token != "eyJ.nearly-dead.sig"
    assert storage.data[API_KEY]["access_token"] == record.access_token


def test_separate_keys_do_not_share_a_flight():
    storage = DictStorage()
    other_key = "PSotherkey" + "0" * 26
    a, b = CountingIssuer(), CountingIssuer(api_key=other_key)
    ra = storage.get_token(API_KEY, API_SECRET, a)
    rb = storage.get_token(other_key, API_SECRET, b)
    assert (a.calls, b.calls) == (1, 1)
    assert ra.api_key == API_KEY and rb.api_key == other_key
    assert set(storage.data) == {API_KEY, other_key}


class _MalformedLoad(DictStorage):
    def load_token(self, api_key, api_secret):
        super().load_token(api_key, api_secret)
        return {"access_token": 5}


class _ReadOnly(DictStorage):
    def save_token(self, token_data):
        return False


class _Down(DictStorage):
    # A user's store whose backend is down must not throw away a token KIS already issued:
    # the next attempt would land inside KIS's one-per-minute window.
    def save_token(self, token_data):
        raise ConnectionError("database is down")


@pytest.mark.parametrize(
    ("storage_class", "warning"),
    [
        pytest.param(_MalformedLoad, "malformed", id="malformed-load-reads-as-no-token"),
        pytest.param(_ReadOnly, "could not be stored", id="failing-save"),
        pytest.param(_Down, "could not be stored", id="raising-save"),
    ],
)
def test_a_broken_store_still_hands_out_the_issued_token(caplog, storage_class, warning):
    storage = storage_class()
    issuer = CountingIssuer()
    with caplog.at_level(logging.WARNING):
        record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1 and record.access_token
    assert any(warning in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------- invalidation
def test_invalidate_deletes_only_the_matching_token():
    storage = DictStorage()
    storage.save_token(make_record("eyJ.current.sig").to_legacy_dict(API_SECRET))
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.some-older.sig") is False
    assert storage.data[API_KEY]["access_token"] == "eyJ.current.sig"
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.current.sig") is True
    assert API_KEY not in storage.data
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.current.sig") is False


def test_invalidate_with_another_secret_deletes_nothing():
    storage = DictStorage()
    storage.save_token(make_record("eyJ.current.sig").to_legacy_dict(API_SECRET))
    assert storage.invalidate_token(API_KEY, "not-the-secret", "eyJ.current.sig") is False
    assert API_KEY in storage.data


def test_many_callers_seeing_one_dead_token_cause_one_issuance():
    storage = DictStorage()
    storage.save_token(make_record("eyJ.dead.sig").to_legacy_dict(API_SECRET))
    n = 20
    barrier = threading.Barrier(n)
    issuer = CountingIssuer()
    outcomes: list[str | BaseException] = []
    lock = threading.Lock()

    def caller():
        try:
            barrier.wait(HANG)
            storage.invalidate_token(API_KEY, API_SECRET, "eyJ.dead.sig")
            token = storage.get_token(API_KEY, API_SECRET, issuer).access_token
        except BaseException as exc:
            token = exc
        with lock:
            outcomes.append(token)

    threads = [threading.Thread(target=caller) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
    assert issuer.calls == 1
    assert len(outcomes) == n and len(set(outcomes)) == 1
    assert outcomes[0] != "eyJ.dead.sig"


# ------------------------------------------------------------------------------------ EGW00133
def test_rate_limited_leader_rereads_the_store_and_adopts_a_peers_token():
    storage = DictStorage()
    peer = make_record("eyJ.from-a-peer.sig")

    class PeerWinsTheWindow(CountingIssuer):
        def __call__(self):
            with self._lock:
                self.calls += 1
            # Another server got the one issuance of this minute and stored it.
            storage.save_token(peer.to_legacy_dict(API_SECRET))
            raise rate_limited()

    issuer = PeerWinsTheWindow()
    started = time.monotonic()
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert record.access_token == "eyJ.from-a-peer.sig"
    assert issuer.calls == 1
    assert time.monotonic() - started < 1.0  # no backoff needed: the store already had it


def test_rate_limited_leader_backs_off_then_succeeds(monkeypatch):
    storage = DictStorage()
    issuer = CountingIssuer(errors=[rate_limited(), rate_limited()])
    pauses: list[float] = []
    monkeypatch.setattr("korea_investment_stock.token.storage.time.sleep", pauses.append)
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 3 and record.access_token
    assert len(pauses) == 2
    assert 0.8 <= pauses[0] <= 1.2 and 1.6 <= pauses[1] <= 2.4  # exponential, jittered


def test_rate_limited_leader_gives_up_at_the_issue_deadline():
    class Short(DictStorage):
        issue_deadline = 0.3

    storage = Short()
    issuer = CountingIssuer(errors=[rate_limited() for _ in range(100)])
    started = time.monotonic()
    with pytest.raises(TokenRateLimitedError) as info:
        storage.get_token(API_KEY, API_SECRET, issuer)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 3.0
    assert 1 <= issuer.calls <= 5
    text = str(info.value)
    assert "one token issuance per minute" in text and "EGW00133" in text
    assert info.value.code == "EGW00133"
    assert isinstance(info.value, KoreaInvestmentError)
    assert API_SECRET not in text


def test_rate_limit_gives_up_for_every_waiting_follower_once(counting_followers):
    class Short(DictStorage):
        issue_deadline = 0.2

    storage = Short()
    n = 10
    issuer = CountingIssuer(gate=lambda: counting_followers(n - 1), errors=[rate_limited() for _ in range(100)])
    results, errors = stampede(storage, n, issuer)
    assert all(isinstance(e, TokenRateLimitedError) for e in errors)
    assert len({id(e.__cause__ or e) for e in errors}) == 1  # one failure, each follower with its own copy
    assert issuer.calls <= 5


def test_other_issue_errors_are_not_retried():
    storage = DictStorage()
    issuer = CountingIssuer(errors=[TokenIssueError("tokenP failed: HTTP 500", status=500)])
    with pytest.raises(TokenIssueError):
        storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1


def test_default_compare_and_delete_never_deletes_a_token_saved_meanwhile():
    # A store with slow round trips: thread A reads the dead token, and before its delete lands,
    # thread B deletes it, issues a replacement and saves it. A must not delete B's replacement.
    a_read_dead = threading.Event()

    class Slow(DictStorage):
        def delete_token(self, api_key, api_secret):
            if threading.current_thread().name == "A":
                a_read_dead.set()
                b_done.wait(0.5)  # the race window a network round trip opens (B cannot finish in it when fixed)
            return super().delete_token(api_key, api_secret)

    storage = Slow()
    storage.save_token(make_record("eyJ.dead.sig").to_legacy_dict(API_SECRET))
    issuer = CountingIssuer()
    b_done = threading.Event()
    outcome: dict[str, str] = {}

    def a():
        storage.invalidate_token(API_KEY, API_SECRET, "eyJ.dead.sig")
        outcome["A"] = storage.get_token(API_KEY, API_SECRET, issuer).access_token

    def b():
        assert a_read_dead.wait(HANG)
        storage.invalidate_token(API_KEY, API_SECRET, "eyJ.dead.sig")
        outcome["B"] = storage.get_token(API_KEY, API_SECRET, issuer).access_token
        b_done.set()

    threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
    assert issuer.calls == 1
    assert outcome["A"] == outcome["B"] != "eyJ.dead.sig"


def test_a_new_store_never_inherits_the_unsaved_token_of_a_collected_one():
    """The in-process memory of unsaved tokens is keyed by store: a new store is a new key.

    It was keyed by ``id(store)``, which CPython hands out again once a store is
    collected: the next store then got the old one's token without any tokenP.
    """
    import gc

    calls = []
    for _ in range(40):
        storage = _Down()
        issuer = CountingIssuer()
        storage.get_token(API_KEY, API_SECRET, issuer)
        calls.append(issuer.calls)
        del storage
        gc.collect()
    assert calls == [1] * 40


def test_a_store_on_a_new_client_never_inherits_a_collected_clients_state():
    """Stores given ``client=`` were keyed by ``id(client)``: a store on a new client at a collected
    client's address inherited the old store's unsaved token, and so made no tokenP call."""
    import gc

    import fakeredis
    import redis

    from korea_investment_stock.token.redis import RedisTokenStorage

    class _NoScripts(fakeredis.FakeRedis):  # reads work, every script (so every save) is refused
        def evalsha(self, *args: object, **kwargs: object) -> object:
            raise redis.exceptions.ResponseError("ERR scripts are disabled here")

    server = fakeredis.FakeServer()
    calls, seen = [], set()
    for _ in range(60):
        client = _NoScripts(server=server, decode_responses=True)
        seen.add(id(client))
        store = RedisTokenStorage(client=client, key_prefix="kis-test:ids", host_copy=False)
        issuer = CountingIssuer()
        store.get_token(API_KEY, API_SECRET, issuer)  # issued, not stored: kept for this store only
        calls.append(issuer.calls)
        del store, client
        gc.collect()
    assert len(seen) < 60, "no address was reused: the test proves nothing on this interpreter"
    assert calls == [1] * 60


def test_the_mark_of_stores_that_answered_goes_with_the_stores():
    """Every store that ever answered stayed in a module-level set for good."""
    import gc

    from korea_investment_stock.token import storage as storage_module

    before = len(storage_module._SCOPES)
    for _ in range(50):
        store = DictStorage()
        store.get_token(API_KEY, API_SECRET, CountingIssuer())
        del store
    gc.collect()
    assert len(storage_module._SCOPES) <= before + 1


def test_a_store_collected_while_its_registry_is_busy_does_not_deadlock():
    """A finalizer runs inside the garbage collector, on whatever thread allocated, maybe one that
    holds the scope registry's lock: it must never wait for that lock."""
    import gc

    from korea_investment_stock.token import storage as storage_module

    def run() -> None:
        store = DictStorage()
        store.get_token(API_KEY, API_SECRET, CountingIssuer())
        store.cycle = store  # type: ignore[attr-defined]  # only the cyclic collector frees it
        del store
        with storage_module._SCOPES._lock:  # as if an allocation inside the registry triggered the GC
            gc.collect()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10.0)
    assert not worker.is_alive(), "the finalizer waited for a lock its own thread held"
