"""The defects the hardening issue proved, one test each.

Each test fails on the code before the typed issuance lease (commit ec83bc2) and
passes now; most use only public behaviour, so they ran unchanged against it.
Redis cases run on fakeredis and on the real redis-server.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import requests

from korea_investment_stock import FileTokenStorage, KoreaInvestment, LockingRedisTokenStorage
from korea_investment_stock.errors import (
    InvalidCredentialsError,
    StorageError,
    TokenIssueError,
    TokenRateLimitedError,
)
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.token.issuer import TokenIssuer
from korea_investment_stock.token.record import credential_fingerprint

from .redis_fixtures import redis_backend, redis_prefix, redis_server_url, redis_url  # noqa: F401
from .workers import ACCOUNT, API_KEY, API_SECRET, CountingIssuer, DictStorage, make_record

HANG = 30.0


def node(backend: Any, **kwargs: Any) -> LockingRedisTokenStorage:
    """One "server" sharing the Redis under test (its own client, so its own flight scope)."""
    return LockingRedisTokenStorage(client=backend.client(), key_prefix=backend.prefix, **kwargs)


def issue_for(kis: FakeKIS, secret: str | None = None) -> Any:
    return TokenIssuer(requests.Session(), kis.url, kis.app_key, secret or kis.app_secret).issue


# ---------------------------------------------------------------- 1. one bad secret
def test_a_server_with_a_wrong_secret_does_not_fail_the_correct_ones(redis_backend, fake_kis):  # noqa: F811
    """A pod left on an old secret fails alone: its failure marker is its own credential's."""
    wrong = "W" * 180
    stale_pod = node(redis_backend, failure_backoff=30.0)
    with pytest.raises(InvalidCredentialsError):
        stale_pod.get_token(fake_kis.app_key, wrong, issue_for(fake_kis, wrong))
    healthy = node(redis_backend, failure_backoff=30.0)
    record = healthy.get_token(fake_kis.app_key, fake_kis.app_secret, issue_for(fake_kis))
    assert record.access_token in fake_kis.issued_tokens()
    assert fake_kis.stats.tokenp_requests == 2  # the wrong pod's, and one for the fleet


# ------------------------------------------------------------ 2. a lost lease keeps issuing
def test_a_holder_that_lost_its_lease_stops_calling_tokenp(redis_backend, fake_kis_factory):  # noqa: F811
    kis = fake_kis_factory(issue_window=60.0)
    outside = requests.post(
        kis.url + "/oauth2/tokenP",
        json={"grant_type": "client_credentials", "appkey": kis.app_key, "appsecret": kis.app_secret},
        timeout=10,
    )
    assert outside.status_code == 200  # someone else opened KIS's one-per-minute window
    holder = node(redis_backend, issue_deadline=20.0)
    keys = holder.redis_keys(kis.app_key)
    outcome: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: outcome.setdefault("record", holder.get_token(kis.app_key, kis.app_secret, issue_for(kis))),
        daemon=True,
    )
    worker.start()
    kis.wait_for_stats(lambda s: s.tokenp_requests >= 2, HANG)  # the holder met EGW00133 and backs off
    admin = redis_backend.client()
    admin.set(keys.lock, "another-server:1:abc", px=20_000)  # its lease expired; another server took it
    at_steal = kis.stats.tokenp_requests
    # The old loop called tokenP again about a second later, beside the new holder.
    with pytest.raises(TimeoutError):
        kis.wait_for_stats(lambda s: s.tokenp_requests > at_steal, 3.0)
    peer = make_record("eyJ.stored-by-the-new-holder.sig", api_key=kis.app_key, api_secret=kis.app_secret)
    LockingRedisTokenStorage(client=redis_backend.client(), key_prefix=redis_backend.prefix).save_token(
        peer.to_legacy_dict(kis.app_secret)
    )
    admin.delete(keys.lock)
    admin.publish(keys.channel, "ready")
    worker.join(HANG)
    assert not worker.is_alive()
    assert outcome["record"].access_token == peer.access_token
    assert kis.stats.tokenp_requests == at_steal


# --------------------------------------------------------------- 3. a leaked lease
def test_a_hung_issuance_does_not_hold_the_lease_forever(redis_backend, fake_kis, monkeypatch):  # noqa: F811
    """Renewal is bounded by issue deadline + one call + slack: after it, the lease expires and others lead."""
    from korea_investment_stock.token import storage as storage_module

    monkeypatch.setattr(storage_module, "HOLD_SLACK", 0.5)
    hung, entered = threading.Event(), threading.Event()

    def never_answers():
        entered.set()
        hung.wait(HANG)
        raise TokenIssueError("gave up")

    never_answers.call_seconds = 0.1  # what it claims one call takes (a TokenIssuer's is its HTTP bound)

    holder = node(redis_backend, lease_seconds=0.3, issue_deadline=0.2)
    worker = threading.Thread(
        target=lambda: pytest.raises(TokenIssueError, holder.get_token, API_KEY, API_SECRET, never_answers),
        daemon=True,
    )
    worker.start()
    try:
        assert entered.wait(HANG)
        other = node(redis_backend, lease_seconds=0.3, wait_timeout=10.0)
        record = other.get_token(API_KEY, API_SECRET, CountingIssuer())  # before the hung call returns
        assert record.access_token.startswith("eyJ.issued-")
    finally:
        hung.set()
        worker.join(HANG)


def test_an_interrupt_right_after_the_lease_was_taken_releases_it(redis_backend, monkeypatch):  # noqa: F811
    """A KeyboardInterrupt in the gap between taking the lease and issuing (a REPL survives it)."""
    from korea_investment_stock.token.redis import RedisLease

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RedisLease, "_start_renewal", interrupted)
    storage = node(redis_backend)
    with pytest.raises(KeyboardInterrupt):
        storage.get_token(API_KEY, API_SECRET, CountingIssuer())
    assert redis_backend.client().get(storage.redis_keys(API_KEY).lock) is None
    monkeypatch.undo()
    record = node(redis_backend, wait_timeout=2.0).get_token(API_KEY, API_SECRET, CountingIssuer())
    assert record.access_token


# -------------------------------------------------------------- 4. stale splits the flight
def test_a_forced_refresh_and_a_new_client_make_one_issue_call():
    storage = DictStorage()
    entered, second, release = threading.Event(), threading.Event(), threading.Event()
    calls: list[int] = []

    def issue():
        calls.append(1)
        (second if len(calls) > 1 else entered).set()
        assert release.wait(HANG)
        return make_record(f"eyJ.issued-{len(calls)}.sig")

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(storage.get_token(API_KEY, API_SECRET, issue).access_token)),
        threading.Thread(
            target=lambda: results.append(storage.get_token(API_KEY, API_SECRET, issue, stale="eyJ.old").access_token)
        ),
    ]
    threads[0].start()
    assert entered.wait(HANG)
    threads[1].start()
    assert not second.wait(1.0), "a second tokenP call from the same process"
    release.set()
    for thread in threads:
        thread.join(HANG)
    assert len(calls) == 1
    assert results == ["eyJ.issued-1.sig"] * 2


# -------------------------------------------------------------- 5. the fence goes backwards
def test_a_delayed_save_of_an_invalidated_token_is_refused(redis_backend):  # noqa: F811
    from korea_investment_stock.token.credentials import Credentials
    from korea_investment_stock.token.lease import Acquired, SaveOutcome

    creds = Credentials(API_KEY, API_SECRET)
    a, b = node(redis_backend), node(redis_backend)
    old = a._new_lease(creds)
    assert old.acquire(time.monotonic() + 5) is Acquired.HELD
    dead = make_record("eyJ.dead.sig")
    assert old.save(dead) is SaveOutcome.STORED
    assert a.invalidate_token(API_KEY, API_SECRET, dead.access_token)  # KIS said EGW00121
    new = b._new_lease(creds)
    assert new.acquire(time.monotonic() + 5) is Acquired.HELD  # the new holder is inside tokenP
    old.settled = False  # a replay of the old holder's save, delayed in the network
    assert old.save(dead) is SaveOutcome.REFUSED
    assert a.load_token(API_KEY, API_SECRET) is None
    assert new.save(make_record("eyJ.fresh.sig")) is SaveOutcome.STORED


def test_generations_survive_a_flush(redis_backend):  # noqa: F811
    from korea_investment_stock.token.credentials import Credentials
    from korea_investment_stock.token.lease import Acquired

    creds = Credentials(API_KEY, API_SECRET)
    storage = node(redis_backend)
    first = storage._new_lease(creds)
    assert first.acquire(time.monotonic() + 5) is Acquired.HELD
    client = redis_backend.client()
    for key in client.scan_iter(match=f"{redis_backend.prefix}:*"):
        client.delete(key)  # FLUSHALL, eviction or a failover that lost the keys
    second = storage._new_lease(creds)
    assert second.acquire(time.monotonic() + 5) is Acquired.HELD
    assert second.generation > first.generation
    second.release()


def test_a_replayed_fenced_save_is_reported_as_stored(redis_backend, caplog):  # noqa: F811
    """redis-py retries a script whose reply was lost: the second run must not say "not stored"."""
    from korea_investment_stock.token.credentials import Credentials
    from korea_investment_stock.token.lease import Acquired, SaveOutcome

    storage = node(redis_backend)
    lease = storage._new_lease(Credentials(API_KEY, API_SECRET))
    assert lease.acquire(time.monotonic() + 5) is Acquired.HELD
    record = make_record("eyJ.saved-once.sig")
    assert lease.save(record) is SaveOutcome.STORED
    lease.settled = False
    with caplog.at_level(logging.INFO):
        assert lease.save(record) is SaveOutcome.STORED
    assert "newer token" not in caplog.text


# -------------------------------------------------------------- 6. file locking
def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    directory = tmp_path / "kis"
    directory.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o644)
    token_file = directory / "token.key"
    storage = FileTokenStorage(token_file)
    for lock in {storage.lock_path, Path(str(token_file) + ".lock"), _issuance_lock(storage)}:
        lock.symlink_to(victim)
    with pytest.raises(StorageError, match="symbolic link"):
        storage.get_token(API_KEY, API_SECRET, CountingIssuer())
    assert victim.read_bytes() == b"precious" and victim.stat().st_mode & 0o777 == 0o644


def _issuance_lock(storage: FileTokenStorage) -> Path:
    method = getattr(storage, "issuance_lock_path", None)
    return method(API_KEY) if method is not None else storage.lock_path


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_token_directory_others_can_write_is_refused(tmp_path, mode):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(StorageError, match="can be written by other users"):
        FileTokenStorage(directory / "token.key").get_token(API_KEY, API_SECRET, CountingIssuer())


def test_the_filelock_floor_has_every_feature_the_store_relies_on():
    """O_NOFOLLOW without O_TRUNC and fork-safe descriptors arrived in 4.2.1; cancel_check in 3.24."""
    import filelock

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (requirement,) = [r for r in pyproject["project"]["dependencies"] if r.startswith("filelock")]
    floor = tuple(int(p) for p in re.search(r">=\s*([\d.]+)", requirement).group(1).split("."))
    assert floor >= (4, 2, 1), requirement
    installed = tuple(int(p) for p in filelock.__version__.split(".")[:3] if p.isdigit())
    assert installed >= floor


# ------------------------------------------------------------ 7. one lock per app key
def test_one_account_issuing_does_not_block_another(tmp_path):
    token_file = tmp_path / "kis" / "token.key"
    entered, release = threading.Event(), threading.Event()
    slow = CountingIssuer(gate=lambda: (entered.set(), release.wait(HANG)))
    other_key = "PSanotheraccountanotheraccount00001"
    fast = CountingIssuer(api_key=other_key)
    first = threading.Thread(target=lambda: FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, slow))
    first.start()
    try:
        assert entered.wait(HANG)
        done = threading.Event()
        second = threading.Thread(
            target=lambda: (FileTokenStorage(token_file).get_token(other_key, API_SECRET, fast), done.set())
        )
        second.start()
        assert done.wait(5.0), "the other account queued behind the first one's issuance"
    finally:
        release.set()
        first.join(HANG)
    second.join(HANG)
    assert slow.calls == 1 and fast.calls == 1


# -------------------------------------------------- 8. a missing directory that cannot exist
def test_a_token_directory_that_cannot_be_created_falls_back_to_this_process(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    token_file = blocker / "kis" / "token.key"
    issuer = CountingIssuer()
    first = FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, issuer)
    second = FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, issuer)
    assert first == second and issuer.calls == 1


# ------------------------------------------------------------- 10. keys without a TTL
@pytest.mark.parametrize("what", ["lock", "failure-marker"])
def test_a_key_without_ttl_does_not_wedge_the_fleet(redis_backend, what):  # noqa: F811
    storage = node(redis_backend, wait_timeout=3.0)
    keys = storage.redis_keys(API_KEY)
    client = redis_backend.client()
    if what == "lock":
        client.set(keys.lock, "set-by-hand")
    else:
        for name in (f"{keys.token}:failed", f"{keys.token}:failed:{credential_fingerprint(API_KEY, API_SECRET)[:16]}"):
            client.set(name, "InvalidCredentialsError:EGW00105")
    issuer = CountingIssuer()
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert record.access_token and issuer.calls == 1


# --------------------------------------------------- 11. the secret in traceback locals
def _values(value: Any, depth: int = 0):
    """Everything an error reporter would serialise from one local: containers walked, objects repr'd."""
    if depth > 6:
        return
    if isinstance(value, str | bytes):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _values(k, depth + 1)
            yield from _values(v, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _values(item, depth + 1)
    else:
        yield repr(value)


def _leaks(exc: BaseException, secret: str) -> list[str]:
    found = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if "korea_investment_stock" in frame.f_code.co_filename:
                for name, value in frame.f_locals.items():
                    if any(secret in (v if isinstance(v, str) else repr(v)) for v in _values(value)):
                        found.append(f"{frame.f_code.co_name}:{name}")
            tb = tb.tb_next
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return found


def test_no_frame_of_ours_holds_the_secret_when_tokenp_fails(tmp_path, fake_kis_factory):
    kis = fake_kis_factory()
    kis.set_token_fault("http500", times=None)
    with pytest.raises(TokenIssueError) as caught:
        KoreaInvestment(
            kis.app_key, kis.app_secret, ACCOUNT, token_storage=FileTokenStorage(tmp_path / "t"), base_url=kis.url
        )
    assert _leaks(caught.value, kis.app_secret) == []


def test_no_frame_of_ours_holds_the_secret_when_kis_is_unreachable(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = API_SECRET
    with pytest.raises(TokenIssueError) as caught:
        KoreaInvestment(
            API_KEY,
            secret,
            ACCOUNT,
            token_storage=FileTokenStorage(tmp_path / "t"),
            base_url=f"http://127.0.0.1:{port}",
        )
    assert _leaks(caught.value, secret) == []


# ------------------------------------------------------------------- 12. logs that lie
def test_a_peers_token_found_after_egw00133_is_not_logged_as_issued(caplog):
    storage = DictStorage()
    peer = make_record("eyJ.stored-by-a-peer.sig")

    def issue():
        storage.save_token(peer.to_legacy_dict(API_SECRET))  # a peer stored it while KIS said wait
        raise TokenRateLimitedError("one per minute", code="EGW00133", status=403)

    with caplog.at_level(logging.INFO, logger="korea_investment_stock"):
        record = storage.get_token(API_KEY, API_SECRET, issue)
    assert record.access_token == peer.access_token
    assert "issued a new access token" not in caplog.text
    assert storage.saves == 1, "the peer's token is not saved a second time"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX")
def test_followers_raise_their_own_exception_instance(counting_followers):
    storage = DictStorage()
    n = 8
    error = InvalidCredentialsError("bad secret", code="EGW00105", status=403)
    issuer = CountingIssuer(gate=lambda: counting_followers(n - 1), errors=[error])
    errors: list[BaseException] = []

    def call():
        try:
            storage.get_token(API_KEY, API_SECRET, issuer)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
    assert len(errors) == n and len({id(e) for e in errors}) == n
    assert all(isinstance(e, InvalidCredentialsError) and e.code == "EGW00105" for e in errors)


# ------------------------------------------- review: forced refreshes and KIS's same token
def test_concurrent_forced_refreshes_make_one_tokenp_call_when_kis_answers_the_same_token(fake_kis_factory, tmp_path):
    """Within 6 h KIS hands the same token back: a refresher must accept it, not go round and issue again."""
    kis = fake_kis_factory(issue_window=3.0)
    storage = FileTokenStorage(tmp_path / "kis" / "token.key")
    clients = [
        KoreaInvestment(kis.app_key, kis.app_secret, ACCOUNT, token_storage=storage, base_url=kis.url) for _ in range(3)
    ]
    kis.advance(4.0)  # past the issuance window of the first token: a refresh may call tokenP now
    before = kis.stats.tokenp_requests
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def refresh(client):
        try:
            barrier.wait(HANG)
            client.issue_access_token()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=refresh, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
    assert errors == []
    assert kis.stats.tokenp_requests - before == 1, "refreshers that got KIS's same token issued again"
    assert len({c.access_token for c in clients}) == 1


def test_an_invalidated_token_does_not_come_back_from_this_process_memory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # the token can only be kept in memory
    storage = FileTokenStorage(blocker / "kis" / "token.key")
    issuer = CountingIssuer()
    first = storage.get_token(API_KEY, API_SECRET, issuer)
    assert storage.invalidate_token(API_KEY, API_SECRET, first.access_token)
    second = storage.get_token(API_KEY, API_SECRET, issuer)
    assert second.access_token != first.access_token and issuer.calls == 2


_EXIT_SCRIPT = """
import sys, time
from korea_investment_stock.errors import StorageUnavailableError
from korea_investment_stock.token.lease import ProcessLease
from korea_investment_stock.token.storage import TokenStorage
sys.path.insert(0, {root!r})
from tests.workers import CountingIssuer, DictStorage

class Down(DictStorage):
    outage_allowance = 1.0
    def _new_lease(self, credentials):
        def never(record):
            raise StorageUnavailableError("the store is down")
        return ProcessLease(credentials, never)

Down().get_token({key!r}, {secret!r}, CountingIssuer())
print(time.monotonic(), flush=True)
"""


def test_exit_waits_for_a_pending_save_once_and_at_most_the_allowance():
    """atexit and multiprocessing's exit hook both run in a parent process: one deadline for both."""
    import subprocess
    import sys

    root = str(Path(__file__).parents[1])
    script = _EXIT_SCRIPT.format(root=root, key=API_KEY, secret=API_SECRET)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    ended = time.monotonic()
    returned_at = float(out.stdout.strip().splitlines()[-1])
    assert returned_at - started < 10.0
    assert ended - returned_at < 1.0 + 0.8, f"exit waited {ended - returned_at:.2f}s for a 1 s allowance"


# ------------------------------------------------- the refusal never advises changing a shared dir
@pytest.mark.parametrize("mode", [0o1777, 0o1770])
def test_a_sticky_shared_directory_is_refused_without_advice_to_chmod_it(tmp_path, mode):
    """/tmp is one: 'chmod 700 /tmp' would break the machine.  Point at a directory of your own instead."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(StorageError, match="can be written by other users") as caught:
        FileTokenStorage(directory / "token.key").get_token(API_KEY, API_SECRET, CountingIssuer())
    assert "chmod" not in str(caught.value)
    assert "directory of your own" in str(caught.value) and "KOREA_INVESTMENT_TOKEN_FILE" in str(caught.value)


def test_the_system_temporary_directory_is_refused_without_advice_to_chmod_it():
    import tempfile

    system_tmp = Path(tempfile.gettempdir())
    if not system_tmp.stat().st_mode & 0o002:
        pytest.skip(f"{system_tmp} is not shared on this machine")
    with pytest.raises(StorageError) as caught:
        FileTokenStorage(system_tmp / f"kis-{os.getpid()}.key").get_token(API_KEY, API_SECRET, CountingIssuer())
    assert "chmod" not in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root: every directory is root's own, so none is advised")
def test_a_loose_directory_of_ones_own_gets_the_chmod_advice(tmp_path):
    directory = tmp_path / "mine"
    directory.mkdir()
    directory.chmod(0o775)
    with pytest.raises(StorageError, match=f"chmod 700 {directory}"):
        FileTokenStorage(directory / "token.key").get_token(API_KEY, API_SECRET, CountingIssuer())
