"""Child processes of the real-time fleet tests: each is a separate program with its own client.

A worker builds its store (file or Redis) and a ``KoreaInvestment`` against the fake, opens one
stream, and obeys commands from its queue; it reports what its stream saw to the results queue
(the first event of each kind after a subscribe or a gap, every gap, and counts on demand), so the
test process can assert "a Gap, then events" without sharing memory with it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from korea_investment_stock.realtime.owner import Backend

HANG = 60.0
CTX = multiprocessing.get_context("spawn")


def build_client(spec: dict[str, Any]) -> Any:
    from korea_investment_stock.client import KoreaInvestment

    if spec["store"] == "file":
        from korea_investment_stock.token.file import FileTokenStorage

        store: Any = FileTokenStorage(spec["token_file"])
    else:
        from korea_investment_stock.token.redis import LockingRedisTokenStorage

        store = LockingRedisTokenStorage(spec["redis_url"], key_prefix=spec["prefix"])
    return KoreaInvestment(
        spec["app_key"],
        spec["app_secret"],
        "12345678-01",
        token_storage=store,
        base_url=spec["kis_url"],
        ws_url=spec["ws_url"],
        hts_id=spec.get("hts_id"),
    )


def stream_worker(spec: dict[str, Any], commands: Any, results: Any) -> None:
    """Serve commands until ``exit``: subscribe, unsubscribe, counts, role."""
    from korea_investment_stock.realtime import Gap, Trade

    pid = os.getpid()
    try:
        kis = build_client(spec)
        stream = kis.stream(**spec.get("options", {}))
    except Exception:
        results.put({"pid": pid, "kind": "error", "error": traceback.format_exc()})
        return
    counts = {"trades": 0, "gaps": 0, "dropped": 0, "other": 0}
    state = {"after_gap": False}

    def consume() -> None:
        for event in stream:
            if isinstance(event, Gap):
                counts["gaps"] += 1
                counts["dropped"] += event.dropped or 0
                state["after_gap"] = True
                results.put(
                    {
                        "pid": pid,
                        "kind": "gap",
                        "start": event.start.timestamp(),
                        "end": event.end.timestamp(),
                        "reason": event.reason,
                        "dropped": event.dropped,
                        "at": time.time(),
                    }
                )
            elif isinstance(event, Trade):
                counts["trades"] += 1
                if counts["trades"] == 1 or state["after_gap"]:
                    results.put(
                        {
                            "pid": pid,
                            "kind": "trade",
                            "symbol": event.symbol,
                            "after_gap": state["after_gap"],
                            "at": time.time(),
                        }
                    )
                    state["after_gap"] = False
            else:
                counts["other"] += 1

    threading.Thread(target=consume, daemon=True).start()
    results.put({"pid": pid, "kind": "ready"})
    while True:
        command = commands.get(timeout=HANG * 5)
        action = command["action"]
        try:
            if action == "subscribe":
                started = time.monotonic()
                stream.subscribe(trades=command.get("trades", ()), orderbooks=command.get("orderbooks", ()))
                results.put({"pid": pid, "kind": "subscribed", "seconds": time.monotonic() - started})
            elif action == "unsubscribe":
                stream.unsubscribe(trades=command.get("trades", ()))
                results.put({"pid": pid, "kind": "unsubscribed"})
            elif action == "counts":
                results.put({"pid": pid, "kind": "counts", **counts})
            elif action == "exit":
                stream.close()
                results.put({"pid": pid, "kind": "bye"})
                return
        except Exception as exc:
            results.put({"pid": pid, "kind": "failed", "type": type(exc).__name__, "error": str(exc)})


class Fleet:
    """Worker processes and their reports: one results queue per worker, buffered in ``seen``.

    One queue each, not one shared: a multiprocessing queue's writers share a lock, and a worker
    SIGSTOPped while it held that lock would silence every other worker until it ran again.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.workers: dict[int, tuple[Any, Any]] = {}
        self.results: dict[int, Any] = {}
        self.seen: list[dict[str, Any]] = []

    def start(self, count: int) -> list[int]:
        started = []
        for _ in range(count):
            commands, results = CTX.Queue(), CTX.Queue()
            process = CTX.Process(target=stream_worker, args=(self.spec, commands, results))
            process.start()
            started.append((process, commands, results))
        pids = []
        for process, commands, results in started:
            assert process.pid is not None
            self.workers[process.pid] = (process, commands)
            self.results[process.pid] = results
            pids.append(process.pid)
        for pid in pids:
            self.expect(pid, "ready")
        return pids

    def send(self, pid: int, **command: Any) -> None:
        self.workers[pid][1].put(command)

    def expect(self, pid: int, kind: str, timeout: float = HANG, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for report in self.seen:
                if report["pid"] == pid and report["kind"] in (kind, "error"):
                    if report["kind"] == "error":
                        raise AssertionError(f"worker {pid} failed: {report['error']}")
                    if all(report.get(k) == v for k, v in match.items()):
                        self.seen.remove(report)
                        return report
            left = deadline - time.monotonic()
            assert left > 0, f"worker {pid} did not report {kind} {match} within {timeout}s; seen {self.seen}"
            try:
                self.seen.append(self.results[pid].get(timeout=left))
            except Exception:
                continue

    def counts(self, pid: int) -> dict[str, Any]:
        """What the worker's stream has seen so far: trades, gaps, events dropped (as its Gaps said)."""
        self.send(pid, action="counts")
        return self.expect(pid, "counts")

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self.workers[pid][0].join(10)

    def close(self) -> None:
        for process, commands in self.workers.values():
            if process.is_alive():
                commands.put({"action": "exit"})
        for process, _ in self.workers.values():
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)


def backend_of(spec: dict[str, Any], app_key: str) -> Backend:
    from korea_investment_stock.realtime.owner import backend_for

    if spec["store"] == "file":
        from korea_investment_stock.token.file import FileTokenStorage

        return backend_for(FileTokenStorage(spec["token_file"]), app_key)
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    return backend_for(LockingRedisTokenStorage(spec["redis_url"], key_prefix=spec["prefix"]), app_key)


def owner_pid(backend: Backend, timeout: float = HANG) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = backend.coordinator.state()
        if state is not None:
            return state.owner.pid
        time.sleep(0.05)  # polling the store: the owner publishes its state every few seconds
    raise AssertionError("no session owner recorded")
