"""Code that runs inside the stress suite's child processes.

Everything a ``multiprocessing`` child runs must be importable by name, so the
workers live here.  The pytest process preloads this module into a forkserver,
so a child costs a fork, not a fresh interpreter.

A worker reports one :class:`~stress.harness.Outcome`-shaped dict per caller;
``at`` is ``time.time()`` when the caller held its token (or got its error).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from korea_investment_stock import KoreaInvestment
from korea_investment_stock.token.file import FileTokenStorage
from korea_investment_stock.token.record import TokenRecord
from korea_investment_stock.token.storage import TokenStorage

ACCOUNT = "12345678-01"
SYMBOL = "005930"
#: Bound on every wait inside a worker (barriers, events, joins).
WORKER_TIMEOUT = 90.0


# ------------------------------------------------------------------------------ storage
def make_storage(spec: dict[str, Any]) -> TokenStorage:
    """The store described by ``spec`` (a picklable dict built by the test's backend fixture)."""
    options = dict(spec.get("options") or {})
    if spec["kind"] == "file":
        return FileTokenStorage(spec["token_file"], **options)
    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    if spec["kind"] == "sentinel":
        return LockingRedisTokenStorage(client=sentinel_master(spec), key_prefix=spec["key_prefix"], **options)
    return LockingRedisTokenStorage(spec["redis_url"], key_prefix=spec["key_prefix"], **options)


#: One Sentinel master client per process and deployment, as an application holds one.
_SENTINEL_MASTERS: dict[tuple[int, str, tuple[tuple[str, int], ...]], Any] = {}


def sentinel_master(spec: dict[str, Any]) -> Any:
    """The recommended Sentinel client for ``spec["sentinels"]`` / ``spec["service"]``, shared per process.

    Shared so every store of a process is one flight scope (the store keys its
    flight on the client), the way an app builds one client at start-up.
    """
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    addresses = tuple((str(host), int(port)) for host, port in spec["sentinels"])
    key = (os.getpid(), str(spec["service"]), addresses)
    client = _SENTINEL_MASTERS.get(key)
    if client is None:
        client = Sentinel(list(addresses), socket_timeout=0.5).master_for(  # type: ignore[no-untyped-call]
            str(spec["service"]),
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
        _SENTINEL_MASTERS[key] = client
    return client


class TimedClient(KoreaInvestment):
    """A real client that remembers when it last adopted a token (no behaviour changed)."""

    token_set_at: float | None = None

    def _set_token(self, record: TokenRecord) -> None:
        super()._set_token(record)
        self.token_set_at = time.time()


def new_client(spec: dict[str, Any], storage: TokenStorage | None = None, **kwargs: Any) -> TimedClient:
    return TimedClient(
        spec["app_key"],
        spec["app_secret"],
        ACCOUNT,
        token_storage=storage if storage is not None else make_storage(spec),
        base_url=spec["url"],
        **kwargs,
    )


def quote(client: KoreaInvestment) -> None:
    answer = client.fetch_domestic_price("J", SYMBOL)
    if answer.get("rt_cd") != "0":
        raise RuntimeError(f"quotation failed: {answer.get('msg_cd')} {answer.get('msg1')}")


def ok(token: str, started: float, at: float | None = None, **extra: Any) -> dict[str, Any]:
    at = time.time() if at is None else at
    return {"ok": True, "token": token, "at": at, "elapsed": time.perf_counter() - started, "extra": extra}


def failed(exc: BaseException, started: float, **extra: Any) -> dict[str, Any]:
    return {
        "ok": False,
        "at": time.time(),
        "error_type": type(exc).__name__,
        "error": str(exc)[:300] or traceback.format_exc(limit=3)[-300:],
        "elapsed": time.perf_counter() - started,
        "extra": extra,
    }


def build_and_quote(build: Callable[[], KoreaInvestment]) -> dict[str, Any]:
    """One caller: build a client (it obtains its token), then quote once with it.

    ``at`` is when the client held its token; ``elapsed`` runs to the end (client shut down).
    """
    started = time.perf_counter()
    try:
        client = build()
    except Exception as exc:
        return failed(exc, started)
    got = time.time()
    with client:
        try:
            quote(client)
        except Exception as exc:
            return failed(exc, started)
    return ok(client._token.access_token, started, at=got)


def run_callers(threads: int, body: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``body(i)`` in ``threads`` threads; a caller that hangs reports an error."""
    results: list[dict[str, Any] | None] = [None] * threads

    def run(i: int) -> None:
        started = time.perf_counter()
        try:
            results[i] = body(i)
        except BaseException as exc:
            results[i] = failed(exc, started)

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    deadline = time.monotonic() + WORKER_TIMEOUT
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    return [
        r
        if r is not None
        else {
            "ok": False,
            "at": time.time(),
            "error_type": "Hang",
            "error": f"caller did not finish within {WORKER_TIMEOUT:.0f}s",
        }
        for r in results
    ]


# ------------------------------------------------------------------ cold stampede
def stampede_process(spec: dict[str, Any], threads: int, barrier: Any, queue: Any, ready: Any = None) -> None:
    """``threads`` callers, each with its own store instance and client, released by one barrier.

    With ``ready`` (a barrier the harness also waits on) every caller first
    reports in, so the harness can act once the whole fleet is up, then release it.
    """
    storages = [make_storage(spec) for _ in range(threads)]

    def body(i: int) -> dict[str, Any]:
        if ready is not None:
            ready.wait(WORKER_TIMEOUT)
        barrier.wait(WORKER_TIMEOUT)
        return build_and_quote(lambda: new_client(spec, storages[i]))

    queue.put(run_callers(threads, body))


# ------------------------------------------------------------ store faults mid-issuance
def fault_fleet_process(
    spec: dict[str, Any], threads: int, barrier: Any, leased: Any, queue: Any, linger: Any = None
) -> None:
    """A cold stampede whose process sets ``leased`` once its store has answered and it opened a lease.

    The harness injects the store fault only after every process got there:
    a store that never answered a process fails it at once by design (a
    wrong URL, not an outage), and that is not what these scenarios test.
    With ``linger`` (an event) the process stays up after reporting until the
    harness sets it, as a server does: a token whose save failed is stored by
    a daemon thread of this process, which dies with it.
    """
    storages = [make_storage(spec) for _ in range(threads)]
    for storage in storages:
        original = storage._new_lease

        def signalling(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            leased.set()  # a leader opens a lease only after its first store read answered
            return _original(*args, **kwargs)

        storage._new_lease = signalling  # type: ignore[method-assign]

    def body(i: int) -> dict[str, Any]:
        barrier.wait(WORKER_TIMEOUT)
        return build_and_quote(lambda: new_client(spec, storages[i]))

    queue.put(run_callers(threads, body))
    if linger is not None:
        linger.wait(WORKER_TIMEOUT)


# ------------------------------------------------------------------- many accounts
def accounts_process(
    spec: dict[str, Any], accounts: list[tuple[str, str]], per_account: int, barrier: Any, queue: Any
) -> None:
    """``per_account`` callers for each of ``accounts`` (app key, secret), each with its own store,
    released by one barrier; each reports its account and how long it took to hold its token."""
    jobs = [(index, key, secret) for index, (key, secret) in enumerate(accounts) for _ in range(per_account)]
    storages = [make_storage(spec) for _ in jobs]

    def body(i: int) -> dict[str, Any]:
        index, key, secret = jobs[i]
        barrier.wait(WORKER_TIMEOUT)
        released = time.time()
        started = time.perf_counter()
        try:
            client = new_client({**spec, "app_key": key, "app_secret": secret}, storages[i])
        except Exception as exc:
            return failed(exc, started, account=index)
        got = time.time()
        with client:
            try:
                quote(client)
            except Exception as exc:
                return failed(exc, started, account=index)
        return ok(client._token.access_token, started, at=got, account=index, token_s=got - released)

    queue.put(run_callers(len(jobs), body))


# -------------------------------------------------------------- simultaneous death
def death_process(spec: dict[str, Any], threads: int, warmed: Any, killed: Any, queue: Any) -> None:
    """Warm clients, wait while the harness kills the token, then every caller quotes once.

    Each caller reports the token it ended with, when it adopted it, and
    whether it had to replace the dead one (``retried``).
    """

    def body(i: int) -> dict[str, Any]:
        started = time.perf_counter()
        client: TimedClient | None = None
        try:
            client = new_client(spec)
        except Exception as exc:
            warmed.wait(WORKER_TIMEOUT)  # keep the barrier whole; the error is reported
            killed.wait(WORKER_TIMEOUT)
            return failed(exc, started, phase="warm")
        warm_token = client._token.access_token
        with client:
            warmed.wait(WORKER_TIMEOUT)
            killed.wait(WORKER_TIMEOUT)
            started = time.perf_counter()
            try:
                quote(client)
            except Exception as exc:
                return failed(exc, started, phase="after-death")
            token = client._token.access_token
            return ok(
                token,
                started,
                at=client.token_set_at or time.time(),
                retried=client.token_set_at is not None,
                warm_token=warm_token,
            )

    queue.put(run_callers(threads, body))


# ---------------------------------------------------------------- redis restarted
def restart_process(spec: dict[str, Any], threads: int, before: Any, after: Any, queue: Any) -> None:
    """Phase 1: clients on one per-process store; the harness restarts Redis; phase 2:
    the old clients quote again and new clients are built on the same store (and pool)."""
    storage = make_storage(spec)

    def body(i: int) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            first = new_client(spec, storage)
            quote(first)
        except Exception as exc:
            before.wait(WORKER_TIMEOUT)
            after.wait(WORKER_TIMEOUT)
            return failed(exc, started, phase="before-restart")
        first_token = first._token.access_token
        before.wait(WORKER_TIMEOUT)
        after.wait(WORKER_TIMEOUT)
        started = time.perf_counter()
        try:
            quote(first)  # the old client keeps its token: Redis is not on its path
            second = new_client(spec, storage)
            quote(second)
        except Exception as exc:
            return failed(exc, started, phase="after-restart")
        finally:
            first.shutdown()
        got = time.time()
        second.shutdown()
        return ok(second._token.access_token, started, at=got, first_token=first_token)

    queue.put(run_callers(threads, body))


# -------------------------------------------------------------------- holder killed
def holder_process(spec: dict[str, Any], go: Any, in_save: Any, block_save: bool) -> None:
    """The victim: becomes the issuer, and is SIGKILLed by the harness mid-issuance.

    With ``block_save`` it stops after tokenP answered and before the token is
    stored (``in_save`` is released then); otherwise the harness kills it while
    the fake KIS holds its tokenP request.
    """
    storage = make_storage(spec)
    if block_save:
        never = threading.Event()

        def save_then_hang(*args: Any, **kwargs: Any) -> None:
            in_save.release()
            never.wait(WORKER_TIMEOUT)  # the harness kills us here
            raise SystemExit("holder was not killed")

        storage._store_issued = save_then_hang  # type: ignore[method-assign]
    go.wait(WORKER_TIMEOUT)
    try:
        new_client(spec, storage)
    except BaseException:
        pass


def follower_process(spec: dict[str, Any], threads: int, go: Any, waiting: Any, queue: Any) -> None:
    """Callers that arrive while the holder is busy; ``waiting`` is released each time one of
    this process's leaders starts waiting for the cross-process lock or lease."""
    storages = [make_storage(spec) for _ in range(threads)]
    for storage in storages:
        original = storage._new_lease

        def signalling(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            waiting.release()  # a leader opens a lease right before it tries to acquire it
            return _original(*args, **kwargs)

        storage._new_lease = signalling  # type: ignore[method-assign]
    go.wait(WORKER_TIMEOUT)

    queue.put(run_callers(threads, lambda i: build_and_quote(lambda: new_client(spec, storages[i]))))


# -------------------------------------------------------------- read-only directory
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def readonly_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run inside a mount namespace where the token directory is read-only (see the test).

    Clients are built the way users build them: one after another, each with
    its default store (from ``KOREA_INVESTMENT_TOKEN_FILE``), then a wave of
    concurrent threads, each with its own client; every client quotes once.
    """
    handler = _Collect()
    logging.getLogger("korea_investment_stock").addHandler(handler)
    logging.getLogger("korea_investment_stock").setLevel(logging.WARNING)
    outcomes: list[dict[str, Any]] = []

    def one(_: int) -> dict[str, Any]:
        return build_and_quote(
            lambda: KoreaInvestment(spec["app_key"], spec["app_secret"], ACCOUNT, base_url=spec["url"])
        )

    for i in range(spec["sequential"]):
        outcomes.append(one(i))
    outcomes.extend(run_callers(spec["threads"], one))
    return {"outcomes": outcomes, "warnings": handler.messages}


def main(argv: list[str]) -> int:
    """``python -m stress.workers readonly '<json spec>'``: print one JSON result line."""
    if len(argv) != 2 or argv[0] != "readonly":
        print("usage: python -m stress.workers readonly '<json spec>'", file=sys.stderr)
        return 2
    print(json.dumps(readonly_main(json.loads(argv[1]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


# ----------------------------------------------------------------------- order storm
def order_storm_process(
    spec: dict[str, Any], threads: int, first_caller: int, orders_each: int, barrier: Any, queue: Any
) -> None:
    """``threads`` callers, each placing ``orders_each`` market buys and reconciling every unknown outcome.

    Every caller's ``k``-th order buys ``1 + k % 3`` shares: the same few orders,
    asked by every caller of every process at once, so a reconciliation sees many
    identical candidates and only the shared ledger keeps each with one caller.
    Each caller reports the order numbers it was told, directly or by
    reconciliation, the quantities it asked for, and how it learnt them.
    """
    from korea_investment_stock import AmbiguousOrderError, OrderStatusUnknown

    storages = [make_storage(spec) for _ in range(threads)]

    def body(i: int) -> dict[str, Any]:
        client = new_client(spec, storages[i])
        started = time.perf_counter()
        known: list[str] = []
        asked: list[int] = []
        unknowns = reconciled = not_placed = ambiguous = 0
        try:
            barrier.wait(WORKER_TIMEOUT)
            for k in range(orders_each):
                quantity = 1 + k % 3
                asked.append(quantity)
                for _attempt in range(3):  # a reconciled "not placed" may be placed again: that is the point
                    try:
                        known.append(client.place_order(SYMBOL, "buy", quantity).order_no)
                        break
                    except AmbiguousOrderError:
                        ambiguous += 1
                        break
                    except OrderStatusUnknown as unknown:
                        unknowns += 1
                        try:
                            found = client.reconcile_order(unknown, settle=0.3)
                        except AmbiguousOrderError:
                            ambiguous += 1
                            break
                        if found is not None:
                            reconciled += 1
                            known.append(found.order_no)
                            break
                        not_placed += 1
            return ok(
                client.access_token or "",
                started,
                known=known,
                asked=asked,
                unknowns=unknowns,
                reconciled=reconciled,
                not_placed=not_placed,
                ambiguous=ambiguous,
            )
        finally:
            client.shutdown()

    queue.put(run_callers(threads, body))
