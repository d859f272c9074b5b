"""Helpers shared by the foundation tests, and top-level worker functions.

Everything a ``multiprocessing`` child runs must be importable by name, so the
multi-process workers live here rather than inside test modules.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from korea_investment_stock.token.record import TokenRecord, format_kst
from korea_investment_stock.token.storage import TokenStorage

API_KEY = "PSabcdefghijklmnopqrstuvwxyz0123456789"[:36]
API_SECRET = "S" * 60 + "secret-value-that-must-never-hit-the-disk" + "x" * 79
ACCOUNT = "12345678-01"


def make_record(
    token: str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.payload-0001.signature",
    *,
    api_key: str = API_KEY,
    api_secret: str = API_SECRET,
    lifetime: float = 86400.0,
    now: float | None = None,
) -> TokenRecord:
    """A record as tokenP would answer it, expiring ``lifetime`` seconds from ``now``."""
    now = time.time() if now is None else now
    body = {
        "access_token": token,
        "access_token_token_expired": format_kst(now + lifetime),
        "token_type": "Bearer",
        "expires_in": 86400,
    }
    return TokenRecord.from_issue_response(body, api_key, api_secret, now=now)


class CountingIssuer:
    """A stand-in for tokenP: counts calls, hands out distinct tokens.

    ``gate``, when given, is called (inside the issue call) before answering, so
    a test can hold the leader until the followers have piled up.
    """

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        api_secret: str = API_SECRET,
        lifetime: float = 86400.0,
        gate: Callable[[], None] | None = None,
        errors: list[BaseException] | None = None,
        prefix: str = "issued",
    ) -> None:
        self.prefix = prefix
        self.api_key = api_key
        self.api_secret = api_secret
        self.lifetime = lifetime
        self.gate = gate
        self.errors = list(errors or [])
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> TokenRecord:
        with self._lock:
            self.calls += 1
            n = self.calls
            error = self.errors.pop(0) if self.errors else None
        if self.gate is not None:
            self.gate()
        if error is not None:
            raise error
        return make_record(
            f"eyJ.{self.prefix}-{n:04d}.sig", api_key=self.api_key, api_secret=self.api_secret, lifetime=self.lifetime
        )


class DictStorage(TokenStorage):
    """A user's custom storage: only the four 0.6.x methods, no ``super().__init__()``."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.saves = 0
        self.cond = threading.Condition()

    def save_token(self, token_data: dict[str, Any]) -> bool:
        with self.cond:
            self.saves += 1
            self.data[token_data["api_key"]] = dict(token_data)
            self.cond.notify_all()
        return True

    def load_token(self, api_key: str, api_secret: str) -> dict[str, Any] | None:
        with self.cond:
            entry = self.data.get(api_key)
            if entry is None or entry["api_secret"] != api_secret:
                return None
            return dict(entry)

    def check_token_valid(self, api_key: str, api_secret: str) -> bool:
        entry = self.load_token(api_key, api_secret)
        return entry is not None and entry["timestamp"] - time.time() > self.refresh_margin

    def delete_token(self, api_key: str, api_secret: str) -> bool:
        with self.cond:
            return self.data.pop(api_key, None) is not None


# ------------------------------------------------------------------------------- caller threads
def start_threads(
    n: int, target: Callable[[int], Any], barrier: Any = None, wait: float = 60.0
) -> tuple[list[threading.Thread], list[Any], list[BaseException | None]]:
    """Start ``n`` threads running ``target(i)`` (each after ``barrier.wait(wait)`` when given).

    Returns the threads and the ``results`` and ``errors`` lists they fill in by index.
    """
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n

    def body(i: int) -> None:
        try:
            if barrier is not None:
                barrier.wait(wait)
            results[i] = target(i)
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results, errors


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a caller hung"


def run_together(
    n: int, target: Callable[[int], Any], hang: float = 60.0
) -> tuple[list[Any], list[BaseException | None]]:
    """``n`` threads released together by one barrier, each calling ``target(i)``; fails if one hangs."""
    threads, results, errors = start_threads(n, target, threading.Barrier(n), hang)
    join_all(threads, hang)
    return results, errors


def access_token_of(client: Any) -> str:
    """The token a freshly constructed client holds (the client is shut down afterwards)."""
    with client:
        return client.access_token


def tokens_and_tracebacks(results: list[Any], errors: list[BaseException | None]) -> tuple[list[str], list[str]]:
    """Split :func:`start_threads` output into the tokens got and the formatted errors."""
    tokens = [r for r, e in zip(results, errors) if e is None and r is not None]
    failures = ["".join(traceback.format_exception(e)) for e in errors if e is not None]
    return tokens, failures


# --------------------------------------------------------------------------- multiprocess workers
def _construct_in_threads(
    storages: list[Any], base_url: str, api_key: str, api_secret: str, barrier: Any
) -> tuple[int, list[str], list[str]]:
    """Each caller waits on ``barrier`` then constructs a client on ``storages[i]``; ``(pid, tokens, errors)``."""
    import os

    from korea_investment_stock import KoreaInvestment

    def caller(i: int) -> str:
        return access_token_of(
            KoreaInvestment(api_key, api_secret, ACCOUNT, token_storage=storages[i], base_url=base_url)
        )

    threads, results, errors = start_threads(len(storages), caller, barrier, 60)
    for t in threads:
        t.join(120)
    tokens, failures = tokens_and_tracebacks(results, errors)
    return os.getpid(), tokens, failures


def file_storage_worker(
    path: str,
    base_url: str,
    api_key: str,
    api_secret: str,
    threads: int,
    barrier: Any,
    results: Any,
    per_thread_storage: bool,
) -> None:
    """Run ``threads`` callers that each wait on ``barrier`` then construct a client.

    Puts one ``(pid, tokens, errors)`` tuple on ``results``.  With
    ``per_thread_storage`` each caller gets its own ``FileTokenStorage``;
    otherwise the process shares one.
    """
    from korea_investment_stock import FileTokenStorage

    shared = FileTokenStorage(path)
    storages = [FileTokenStorage(path) if per_thread_storage else shared for _ in range(threads)]
    results.put(_construct_in_threads(storages, base_url, api_key, api_secret, barrier))


def inherited_storage_worker(
    storage: Any, base_url: str, api_key: str, api_secret: str, threads: int, barrier: Any, results: Any
) -> None:
    """Like :func:`file_storage_worker`, for a forked child that inherited ``storage`` from its parent."""
    results.put(_construct_in_threads([storage] * threads, base_url, api_key, api_secret, barrier))


def run_in_timezone(tz: str, text: str) -> float:
    """Parse ``text`` as KST after switching this (child) process to time zone ``tz``."""
    import os

    os.environ["TZ"] = tz
    time.tzset()
    from korea_investment_stock.token.record import parse_kst

    return parse_kst(text)
