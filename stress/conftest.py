"""Fixtures and reporting for the stress suite.

Run it with ``pytest -n auto stress/``.  Options:

``--stress-json PATH``
    append one JSON object per scenario summary line to ``PATH`` (JSON Lines).
``--stress-full`` (or ``KIS_STRESS_FULL=1``)
    the full matrix: more repetitions, more hypothesis examples and the larger
    fleets.  The default is the CI-sized subset; every scenario runs in both.

Every scenario runs on two backends: ``file`` (``FileTokenStorage``) and
``redis`` (``LockingRedisTokenStorage`` on a real ``redis-server``).  The Redis
variants use ``KIS_TEST_REDIS_URL`` when it is set, otherwise a private
``redis-server`` per pytest worker; scenarios that stop, pause or restart Redis
always start their own.  Without ``redis-server`` (and without the ``redis``
package) the Redis variants are skipped, unless ``CI`` is set: then they fail.

Each scenario prints one summary line in the terminal summary, e.g.::

    cold-matrix[8x16] backend=redis callers=128 tokenP=1 issued=1 minted=1 errors=0
        wait_after_store_ms p50=49.0 p95=153.1 max=164.1 wall=0.79s

- ``tokenP``: tokenP requests the fake KIS server received (real HTTP calls,
  counted by the server, never by mocks); ``issued``: its successful answers;
  ``minted``: distinct new tokens among them (KIS re-answers the same token
  within 6 h); ``errors``: callers that ended with an exception (for the fault
  scenarios the expected ones; see the notes such as ``failed_wave``).
- ``wait_after_store_ms``: per caller, ``time.time()`` when it held its token
  minus the moment that token was stored, taken as the fake server's
  ``last_issued_at`` of the tokenP answer that handed it out (same clock; the
  leader saves it right after, so this is an upper bound by the save time).
- ``wall``: the scenario's measured phase; trailing ``key=value`` pairs are
  scenario notes.  A line ending in ``<-- FAILED`` belongs to a failed test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from korea_investment_stock.testing import FakeKIS
from testsupport.environment import isolate
from testsupport.redis_server import RedisServer

from .harness import Figures, IssuanceClock

_REPORT_KEY = "stress_summary"
_lines: list[tuple[str, dict[str, Any]]] = []
_started = time.monotonic()


# ------------------------------------------------------------------------ options
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stress", "korea-investment-stock stress suite")
    group.addoption(
        "--stress-json",
        metavar="PATH",
        default=None,
        help="append one JSON object per scenario summary line to PATH (JSON Lines)",
    )
    group.addoption(
        "--stress-full",
        action="store_true",
        default=False,
        help="run the full matrix (also KIS_STRESS_FULL=1); default is the CI-sized subset",
    )


def full_matrix(config: pytest.Config) -> bool:
    return bool(config.getoption("--stress-full")) or os.environ.get("KIS_STRESS_FULL", "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stress_full: runs only with --stress-full or KIS_STRESS_FULL=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_matrix(config):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("stress_full") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# ----------------------------------------------------------------------- reporting
@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[Figures], Figures]:
    """Record a scenario's summary line; call it before asserting, so failures show figures too."""

    def record(figures: Figures) -> Figures:
        callspec = getattr(request.node, "callspec", None)
        repeat = callspec.params.get("repeat") if callspec is not None else None
        if repeat:
            figures.scenario += f"#{repeat + 1}"
        request.node.user_properties.append((_REPORT_KEY, figures.to_json()))
        return figures

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == _REPORT_KEY:
            _lines.append((report.nodeid, {**value, "outcome": report.outcome}))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or not _lines:
        return
    wall = time.monotonic() - _started
    terminalreporter.write_sep("=", f"stress summary ({len(_lines)} scenarios, suite wall {wall:.1f}s)")
    for _, data in sorted(_lines, key=lambda entry: entry[0]):
        mark = "" if data["outcome"] == "passed" else f"  <-- {data['outcome'].upper()}"
        terminalreporter.write_line(data["line"] + mark)
    path = config.getoption("--stress-json")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            for nodeid, data in sorted(_lines, key=lambda entry: entry[0]):
                handle.write(json.dumps({"nodeid": nodeid, **data}, ensure_ascii=False) + "\n")
        terminalreporter.write_line(f"stress summary appended to {path}")


# ----------------------------------------------------------------------- isolation
@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def kis_factory() -> Iterator[Callable[..., FakeKIS]]:
    """Started fake KIS servers (no REST rate limit unless given); stopped at teardown."""
    started: list[FakeKIS] = []

    def make(**kwargs: Any) -> FakeKIS:
        kwargs.setdefault("rest_rate_limit", None)
        fake = FakeKIS(**kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in reversed(started):
        fake.stop()


@pytest.fixture
def issuance_clock() -> Iterator[Callable[[FakeKIS], IssuanceClock]]:
    clocks: list[IssuanceClock] = []

    def make(kis: FakeKIS) -> IssuanceClock:
        clock = IssuanceClock(kis)
        clocks.append(clock)
        return clock

    yield make
    for clock in clocks:
        clock.stop()


# --------------------------------------------------------------------- processes
_CONTEXTS: list[Any] = []


def mp_context() -> Any:
    """A forkserver context with the worker module preloaded: a child costs a fork, not an interpreter."""
    if not _CONTEXTS:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["stress.workers"])
        _CONTEXTS.append(context)
    return _CONTEXTS[0]


@dataclass
class Fleet:
    """Child processes of one test; every one still alive is SIGKILLed at teardown."""

    context: Any
    processes: list[Any] = field(default_factory=list)

    def start(self, target: Callable[..., None], *args: Any) -> Any:
        process = self.context.Process(target=target, args=args, daemon=True)
        process.start()
        self.processes.append(process)
        return process

    def reap(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
        for process in self.processes:
            process.join(10)


@pytest.fixture(scope="session", autouse=True)
def _stop_forkserver() -> Iterator[None]:
    """The forkserver is a child of this pytest process too: stop it at the end of the session."""
    yield
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if _CONTEXTS and callable(stop):
        stop()


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    group = Fleet(mp_context())
    try:
        yield group
    finally:
        group.reap()


# ------------------------------------------------------------------------- redis
def _redis_unavailable() -> str | None:
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install -e '.[dev]')"
    try:
        import korea_investment_stock.token.redis  # noqa: F401
    except ImportError as exc:
        return f"korea_investment_stock.token.redis is not importable: {exc}"
    return None


def _require_redis(binary_needed: bool) -> str | None:
    """The redis-server binary (when needed); skip, or under CI fail, when Redis is absent."""
    reason = _redis_unavailable()
    binary = shutil.which("redis-server")
    if reason is None and binary_needed and binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the Redis stress scenarios must run: {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``KIS_TEST_REDIS_URL``, or a private redis-server for this pytest worker."""
    configured = os.environ.get("KIS_TEST_REDIS_URL")
    if configured:
        _require_redis(binary_needed=False)
        yield configured
        return
    binary = _require_redis(binary_needed=True)
    assert binary is not None
    server = RedisServer(binary, tmp_path_factory.mktemp("redis-shared")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-servers this test may SIGSTOP, kill or restart; all killed at teardown."""
    binary = _require_redis(binary_needed=True)
    assert binary is not None
    servers: list[RedisServer] = []

    def start(port: int | None = None, *extra: str) -> RedisServer:
        server = RedisServer(binary, tmp_path / f"redis-{len(servers)}", port=port, extra=extra).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


# ----------------------------------------------------------------------- backends
@dataclass
class Backend:
    """One token store configuration, as a picklable spec for child processes."""

    name: str
    token_file: str | None = None
    redis_url: str | None = None
    key_prefix: str | None = None

    def spec(self, kis: FakeKIS, **options: Any) -> dict[str, Any]:
        return {
            "kind": self.name,
            "token_file": self.token_file,
            "redis_url": self.redis_url,
            "key_prefix": self.key_prefix,
            "options": options,
            "url": kis.url,
            "app_key": kis.app_key,
            "app_secret": kis.app_secret,
        }

    def with_url(self, redis_url: str) -> Backend:
        return Backend(self.name, self.token_file, redis_url, self.key_prefix)


BACKENDS = ("file", "redis")


def _delete_prefix(redis_url: str, prefix: str) -> None:
    """Leave a shared server (``KIS_TEST_REDIS_URL``) as we found it."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.exceptions.RedisError:
        pass  # a scenario may have stopped its own server
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each scenario once per backend; Redis variants share one server with a unique key prefix."""
    if request.param == "file":
        yield Backend("file", token_file=str(tmp_path / "kis" / "token.key"))
        return
    url = request.getfixturevalue("shared_redis_url")
    prefix = f"kis-stress:{uuid.uuid4().hex[:12]}"
    yield Backend("redis", redis_url=url, key_prefix=prefix)
    _delete_prefix(url, prefix)


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    prefix = f"kis-stress:{uuid.uuid4().hex[:12]}"
    yield prefix
    if "shared_redis_url" in request.fixturenames:
        _delete_prefix(request.getfixturevalue("shared_redis_url"), prefix)


@pytest.fixture
def sentinel_cluster() -> Iterator[Any]:
    """A started master, replica and three sentinels (``testsupport.SentinelCluster``); all killed at teardown."""
    _require_redis(binary_needed=True)
    from testsupport import SentinelCluster

    cluster = SentinelCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
