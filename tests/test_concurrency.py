"""Stampedes against the fake KIS server: many threads and processes, exactly one tokenP call."""

from __future__ import annotations

import multiprocessing
import queue
import threading

import pytest

from korea_investment_stock import FileTokenStorage, KoreaInvestment

from .workers import (
    ACCOUNT,
    access_token_of,
    file_storage_worker,
    inherited_storage_worker,
    join_all,
    start_threads,
    tokens_and_tracebacks,
)

HANG = 90.0


def construct_together(n: int, make_client) -> tuple[list[str], list[str]]:
    """``n`` threads released by one barrier, each constructing a client; returns tokens and errors."""
    threads, results, errors = start_threads(n, lambda i: access_token_of(make_client(i)), threading.Barrier(n), HANG)
    join_all(threads, HANG)
    return tokens_and_tracebacks(results, errors)


def assert_exactly_one_issuance(fake, tokens: list[str], errors: list[str], callers: int) -> None:
    assert errors == [], errors[0] if errors else ""
    assert len(tokens) == callers
    stats = fake.stats
    assert stats.tokenp_requests == 1, stats
    assert stats.tokens_issued == 1
    assert stats.tokenp_rejected == {}
    assert set(tokens) == {f"Bearer {fake.issued_tokens()[0]}"}


# ------------------------------------------------------------------------------------- threads
@pytest.mark.parametrize("token_delay", [0.0, 0.3])
def test_100_threads_sharing_one_storage(fake_kis_factory, token_file, token_delay):
    fake = fake_kis_factory(token_delay=token_delay)
    storage = FileTokenStorage(token_file)
    tokens, errors = construct_together(
        100, lambda i: KoreaInvestment(fake.app_key, fake.app_secret, ACCOUNT, token_storage=storage, base_url=fake.url)
    )
    assert_exactly_one_issuance(fake, tokens, errors, 100)


def test_100_threads_each_with_its_own_file_storage(fake_kis_factory, token_file):
    fake = fake_kis_factory(token_delay=0.2)
    tokens, errors = construct_together(
        100,
        lambda i: KoreaInvestment(
            fake.app_key, fake.app_secret, ACCOUNT, token_storage=FileTokenStorage(token_file), base_url=fake.url
        ),
    )
    assert_exactly_one_issuance(fake, tokens, errors, 100)


def test_100_threads_with_the_default_storage(fake_kis, monkeypatch, token_file):
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(token_file))
    tokens, errors = construct_together(
        100, lambda i: KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, ACCOUNT, base_url=fake_kis.url)
    )
    assert_exactly_one_issuance(fake_kis, tokens, errors, 100)


def test_a_stampede_after_the_first_token_makes_no_call(fake_kis, token_file):
    KoreaInvestment(
        fake_kis.app_key,
        fake_kis.app_secret,
        ACCOUNT,
        token_storage=FileTokenStorage(token_file),
        base_url=fake_kis.url,
    ).shutdown()
    tokens, errors = construct_together(
        50,
        lambda i: KoreaInvestment(
            fake_kis.app_key,
            fake_kis.app_secret,
            ACCOUNT,
            token_storage=FileTokenStorage(token_file),
            base_url=fake_kis.url,
        ),
    )
    assert_exactly_one_issuance(fake_kis, tokens, errors, 50)


def test_a_failed_issuance_fails_the_stampede_once(fake_kis, token_file):
    fake_kis.set_token_fault("http500", delay=0.3)
    storage = FileTokenStorage(token_file)
    tokens, errors = construct_together(
        30,
        lambda i: KoreaInvestment(
            fake_kis.app_key, fake_kis.app_secret, ACCOUNT, token_storage=storage, base_url=fake_kis.url
        ),
    )
    # Callers that shared the failed flight fail with it; nobody retries on their own in a burst.
    assert tokens == [] or len(set(tokens)) == 1
    assert len(tokens) + len(errors) == 30
    assert all("TokenIssueError" in e for e in errors)
    assert fake_kis.stats.tokenp_rejected == {"FAKE500": 1}
    assert fake_kis.stats.tokenp_requests <= 2


# ------------------------------------------------------------------------------------ processes
def collect(workers, results) -> tuple[list[str], list[str]]:
    """Start the worker processes and gather every caller's token and error."""
    for p in workers:
        p.start()
    outcomes = []
    try:
        for _ in workers:
            outcomes.append(results.get(timeout=HANG))
    except queue.Empty:
        pytest.fail(f"only {len(outcomes)} of {len(workers)} worker processes reported")
    finally:
        for p in workers:
            p.join(HANG)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in workers] == [0] * len(workers)
    assert len({pid for pid, _, _ in outcomes}) == len(workers)
    return [t for _, ts, _ in outcomes for t in ts], [e for _, _, es in outcomes for e in es]


@pytest.mark.parametrize(
    ("per_thread_storage", "token_delay"),
    [(False, 0.0), (False, 0.3), (True, 0.3)],
    ids=["shared", "slow", "per-thread"],
)
def test_4_processes_x_25_threads_on_one_file(fake_kis_factory, token_file, per_thread_storage, token_delay):
    fake = fake_kis_factory(token_delay=token_delay)
    processes, threads = 4, 25
    ctx = multiprocessing.get_context("spawn")  # no inherited locks or server threads in the children
    barrier = ctx.Barrier(processes * threads)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=file_storage_worker,
            args=(
                str(token_file),
                fake.url,
                fake.app_key,
                fake.app_secret,
                threads,
                barrier,
                results,
                per_thread_storage,
            ),
        )
        for _ in range(processes)
    ]
    tokens, errors = collect(workers, results)
    assert_exactly_one_issuance(fake, tokens, errors, processes * threads)
    assert token_file.with_name("token.key.lock").exists()
    assert fake.app_secret.encode() not in token_file.read_bytes()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_workers_sharing_a_storage_built_by_the_parent(fake_kis_factory, token_file):
    # A pre-fork server (gunicorn --preload, say) builds the storage, then forks workers.
    fake = fake_kis_factory(token_delay=0.2)
    storage = FileTokenStorage(token_file)
    assert not storage.check_token_valid(fake.app_key, fake.app_secret)  # the parent touched it before forking
    processes, threads = 4, 25
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(processes * threads)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=inherited_storage_worker,
            args=(storage, fake.url, fake.app_key, fake.app_secret, threads, barrier, results),
        )
        for _ in range(processes)
    ]
    tokens, errors = collect(workers, results)
    assert_exactly_one_issuance(fake, tokens, errors, processes * threads)
