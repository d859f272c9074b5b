"""The order ledger: a claim is granted once across processes, and requests in flight are seen.

Proven on the process ledger, on files shared by real processes, and on a real
redis-server shared by real processes (what reconciliation relies on when
several workers of one account lose order answers at once).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from korea_investment_stock.trading.ledger import FileOrderLedger, LocalOrderLedger, OrderLedger

from .ledger_workers import claim_all, make_ledger
from .redis_fixtures import redis_prefix, redis_server_url  # noqa: F401

ACCOUNT = "12345678-01"


@pytest.fixture(params=["local", "file", pytest.param("redis", marks=pytest.mark.real_redis)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "local":
        return {"kind": "local"}
    if request.param == "file":
        directory = tmp_path / "store"
        directory.mkdir(mode=0o700)
        return {"kind": "file", "directory": str(directory)}
    return {
        "kind": "redis",
        "url": request.getfixturevalue("redis_server_url"),
        "prefix": request.getfixturevalue("redis_prefix"),
    }


def ledger_of(spec: dict[str, Any]) -> OrderLedger:
    return LocalOrderLedger() if spec["kind"] == "local" else make_ledger(spec)


def test_a_claim_is_granted_once(spec: dict[str, Any]) -> None:
    first, second = ledger_of(spec), ledger_of(spec)  # two processes' views of one place
    assert first.claim(ACCOUNT, "0000000001")
    assert first.is_known(ACCOUNT, "0000000001")
    if spec["kind"] != "local":
        assert second.is_known(ACCOUNT, "0000000001")
        assert not second.claim(ACCOUNT, "0000000001")
    assert not first.claim(ACCOUNT, "0000000001")
    assert not first.is_known("87654321-01", "0000000001")  # accounts are apart
    assert first.claim("87654321-01", "0000000001")


def test_requests_in_flight_are_seen_until_they_end_or_expire(spec: dict[str, Any]) -> None:
    here, there = ledger_of(spec), ledger_of(spec)
    seen_by = there if spec["kind"] != "local" else here
    until = time.time() + 30
    ticket = here.begin(ACCOUNT, "new|KR|005930|buy|3|market|01|", until)
    assert seen_by.pending(ACCOUNT, "new|KR|005930|buy|3|market|01|") == pytest.approx(until)
    assert seen_by.pending(ACCOUNT, "new|KR|005930|buy|4|market|01|") == 0.0  # another request
    here.end(ACCOUNT, ticket)
    assert seen_by.pending(ACCOUNT, "new|KR|005930|buy|3|market|01|") == 0.0
    here.begin(ACCOUNT, "new|KR|005930|sell|1|market|01|", time.time() - 1)  # a process that died in flight
    assert seen_by.pending(ACCOUNT, "new|KR|005930|sell|1|market|01|") == 0.0


@pytest.mark.parametrize("kind", ["file", pytest.param("redis", marks=pytest.mark.real_redis)])
def test_racing_processes_never_claim_one_number_twice(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "file":
        directory = tmp_path / "store"
        directory.mkdir(mode=0o700)
        shared: dict[str, Any] = {"kind": "file", "directory": str(directory)}
    else:
        shared = {
            "kind": "redis",
            "url": request.getfixturevalue("redis_server_url"),
            "prefix": request.getfixturevalue("redis_prefix"),
        }
    numbers = [f"{n:010d}" for n in range(600)]
    context = multiprocessing.get_context("spawn")
    start, queue = context.Barrier(5), context.Queue()
    processes = [context.Process(target=claim_all, args=(shared, numbers, start, queue)) for _ in range(4)]
    for process in processes:
        process.start()
    start.wait(60)
    won = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    counts = Counter(number for batch in won for number in batch)
    assert sorted(counts) == numbers and set(counts.values()) == {1}  # each number once, none lost
    print(f"\n{kind}: 4 processes x 600 claims: wins per process {[len(batch) for batch in won]}")
    assert sum(1 for batch in won if batch) >= 2, "the processes never raced: the test proved nothing"


def test_the_file_ledger_refuses_to_write_through_a_planted_symlink(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ledger = FileOrderLedger(directory)
    assert ledger.claim(ACCOUNT, "0000000001")
    known = next(directory.glob("orders.*")) / "known"
    os.symlink(elsewhere / "victim", known / "0000000002")
    assert not ledger.claim(ACCOUNT, "0000000002") or not (elsewhere / "victim").exists()
    assert not (elsewhere / "victim").exists()


def test_a_waiting_reconciliation_resumes_when_the_request_ends() -> None:
    from korea_investment_stock.trading.orders import wait_for_identical_requests

    from .test_reconcile_rule import intent

    ledger = LocalOrderLedger()
    asked = intent(ACCOUNT)
    from korea_investment_stock.trading.orders import signature

    ticket = ledger.begin(ACCOUNT, signature(asked), time.time() + 60)
    resumed = threading.Event()
    waiter = threading.Thread(target=lambda: (wait_for_identical_requests(ledger, asked), resumed.set()))
    waiter.start()
    assert not resumed.wait(0.3)  # still in flight: the reconciliation holds
    ledger.end(ACCOUNT, ticket)
    assert resumed.wait(10)
    waiter.join(10)
