"""Several processes, one app key, one KIS session: the fleet shares it, and survives its owner's death.

Real processes (spawned, as separate programs would be), the fake KIS WebSocket in this process as
the only witness of what went over the wire: ``max_concurrent`` proves there were never two
sessions, ``opsp8996`` that no second socket was even tried, ``subscriptions`` what KIS holds.
Waits are on the fake's counters and the workers' reports, never sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("websockets")

from korea_investment_stock.realtime.owner import WANTS_TTL
from korea_investment_stock.testing import FakeKIS

from .realtime_workers import HANG, Fleet, backend_of, owner_pid
from .redis_fixtures import redis_prefix, redis_server_url, redis_url  # noqa: F401

#: The failover target is 3 s; the test only refuses a hang (the figure is printed).
FAILOVER_HANG = 15.0
#: The stated bound for a dead process's wants, plus the owner's reconcile interval and slack.
EXPIRY_BOUND = WANTS_TTL + 3.0


@pytest.fixture
def fake() -> Iterator[FakeKIS]:
    with FakeKIS(rest_rate_limit=None, websocket=True) as server:
        server.stream.configure(data_interval=0.05)
        yield server


@pytest.fixture(params=["file", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "file":
        return {"store": "file", "token_file": str(tmp_path / "kis" / "token.key")}
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return {"store": "redis", "redis_url": url, "prefix": prefix}


def stream_status(spec: dict[str, Any], app_key: str, *flags: str) -> str:
    """``kis-token stream-status`` run as a user would, in a child process with the store's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOREA_INVESTMENT_")}
    env["KOREA_INVESTMENT_API_KEY"] = app_key
    if spec["store"] == "file":
        env["KOREA_INVESTMENT_TOKEN_FILE"] = spec["token_file"]
    else:
        env.update(
            KOREA_INVESTMENT_TOKEN_STORAGE="redis",
            KOREA_INVESTMENT_REDIS_URL=spec["redis_url"],
            KOREA_INVESTMENT_REDIS_KEY_PREFIX=spec["prefix"],
        )
    done = subprocess.run(
        [sys.executable, "-m", "korea_investment_stock", "stream-status", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_stream_status(spec: dict[str, Any], app_key: str, pids: list[int], held: int) -> None:
    document = json.loads(stream_status(spec, app_key, "--json"))
    owner_pid = int(document["owner"].rsplit(" ", 1)[1])
    assert owner_pid in pids and document["held"] == held and document["cap"] == 41
    assert sorted(s["pid"] for s in document["subscribers"]) == sorted(pids)
    text = stream_status(spec, app_key)
    assert f"{held}/41 held at KIS" in text and f"pid {owner_pid}" in text
    for output in (text, json.dumps(document)):
        assert app_key not in output and app_key[:12] not in output


@pytest.mark.slow
def test_fleet_shares_one_session_and_survives_the_owner(fake: FakeKIS, store_spec: dict[str, Any]) -> None:
    spec = {
        **store_spec,
        "app_key": fake.app_key,
        "app_secret": fake.app_secret,
        "kis_url": fake.url,
        "ws_url": fake.ws_url,
    }
    app = fake.app_key
    wants = {0: ["005930", "000660"], 1: ["000660", "035720"], 2: ["035720", "051910"]}
    fleet = Fleet(spec)
    try:
        pids = fleet.start(3)
        for i, pid in enumerate(pids):
            fleet.send(pid, action="subscribe", trades=wants[i])
        for pid in pids:
            fleet.expect(pid, "subscribed")
        union = {s for symbols in wants.values() for s in symbols}
        stats = fake.stream.wait_for(lambda s: s.subscriptions.get(app) == len(union))
        assert stats.max_concurrent[app] == 1
        for pid in pids:
            fleet.expect(pid, "trade")
        check_stream_status(spec, app, pids, held=len(union))

        # The cap, from whichever process: nothing changes at KIS, no OPSP0008 is provoked.
        many = [f"{100000 + i}" for i in range(41 - len(union) + 1)]
        fleet.send(pids[2], action="subscribe", trades=many)
        refused = fleet.expect(pids[2], "failed")
        assert refused["type"] == "SubscriptionLimitError" and "41" in refused["error"]
        stats = fake.stream.stats
        assert stats.subscriptions[app] == len(union) and stats.opsp0008 == 0

        # SIGKILL the owner: one survivor takes over; every survivor sees a Gap, then trades.
        backend = backend_of(spec, app)
        victim = owner_pid(backend)
        assert victim in pids
        survivors = [p for p in pids if p != victim]
        killed_at = time.time()
        fleet.kill(victim)
        resumed = []
        for pid in survivors:
            try:
                gap = fleet.expect(pid, "gap", timeout=FAILOVER_HANG)
                trade = fleet.expect(pid, "trade", timeout=FAILOVER_HANG, after_gap=True)
            except AssertionError as exc:  # say what the fake saw: sessions, refusals, the new owner
                seen = fake.stream.stats
                raise AssertionError(
                    f"{exc}; fake: sessions {seen.session_log}, opsp8996={seen.opsp8996}, "
                    f"owner now {owner_pid(backend)}, survivors {survivors}"
                ) from None
            assert trade["at"] >= gap["at"]
            resumed.append(trade["at"] - killed_at)
        print(f"\n[{spec['store']}] failover: events again {max(resumed):.2f}s after SIGKILL of the owner")
        stats = fake.stream.stats
        assert stats.max_concurrent[app] == 1, stats.session_log
        assert stats.opsp8996 == 0

        # The dead owner's wants lapse within the bound; KIS then holds the survivors' union only.
        left = {s for i, pid in enumerate(pids) if pid != victim for s in wants[i]}
        started = time.monotonic()
        fake.stream.wait_for(lambda s: s.subscriptions.get(app) == len(left), timeout=EXPIRY_BOUND)
        print(f"[{spec['store']}] the killed owner's wants released after {time.monotonic() - started:.2f}s")

        # A follower (not the owner) killed: its wants lapse too.
        new_owner = owner_pid(backend)
        follower = next(p for p in survivors if p != new_owner)
        fleet.kill(follower)
        remaining = {s for i, pid in enumerate(pids) if pid == new_owner for s in wants[i]}
        started = time.monotonic()
        fake.stream.wait_for(lambda s: s.subscriptions.get(app) == len(remaining), timeout=EXPIRY_BOUND)
        print(f"[{spec['store']}] a killed follower's wants released after {time.monotonic() - started:.2f}s")
        assert fake.stream.stats.max_concurrent[app] == 1
    finally:
        fleet.close()
