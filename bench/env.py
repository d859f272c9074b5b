"""The machine the bench ran on, and a private redis-server for it.

A private server on a free loopback port keeps other programs' commands out
of the ``INFO stats`` deltas the stampede rows report.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

#: How long a fresh redis-server may take to log that it accepts connections.
REDIS_START_TIMEOUT = 10.0


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_facts(redis_version: str | None) -> dict[str, Any]:
    """What a reader needs to compare our numbers with theirs."""
    model = ""
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
            break
    facts: dict[str, Any] = {
        "cpu_model": model or platform.processor() or "unknown",
        "nproc": os.cpu_count(),
        "nproc_cmd": _run(["nproc"]).strip() or None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "load_average": load_average(),
    }
    for name, module in (
        ("redis_py", "redis"),
        ("filelock", "filelock"),
        ("portalocker", "portalocker"),
        ("python_redis_lock", "redis_lock"),
    ):
        facts[name] = _version(module)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            first = handle.readline().split()
        facts["mem_total_mb"] = int(first[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return facts


def _version(module: str) -> str | None:
    from importlib import metadata

    dist = {"redis_lock": "python-redis-lock"}.get(module, module)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    """Yield a Redis URL: ``url`` as given, or a private redis-server's; None if neither exists.

    The private server is :class:`testsupport.redis_server.RedisServer` (the
    tests' and the stress suite's too), killed and removed on exit.
    """
    if url:
        yield url
        return
    from testsupport.redis_server import RedisServer, redis_server_binary

    try:
        binary = redis_server_binary()
    except RuntimeError:
        yield None
        return
    server = RedisServer(binary, name="bench-redis")
    try:
        try:
            server.start(REDIS_START_TIMEOUT)
        except RuntimeError as error:
            print(f"bench: redis-server did not start; Redis rows are skipped ({error})", file=sys.stderr)
            yield None
            return
        yield server.url
    finally:
        server.stop()


def redis_version(url: str) -> str | None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        return str(client.info("server").get("redis_version"))
    except redis.RedisError:
        return None
    finally:
        client.close()


class CommandCounter:
    """``INFO stats`` / ``INFO commandstats`` deltas around a measured block.

    The INFO calls themselves are subtracted, so the delta is what the
    measured code sent.  Only meaningful on a server nobody else uses.
    """

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=5.0)
        # Open the connection now so its handshake is not counted later.
        self._client.ping()

    def close(self) -> None:
        self._client.close()

    def snapshot(self) -> tuple[int, dict[str, int]]:
        total = int(self._client.info("stats")["total_commands_processed"])
        per_command = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in self._client.info("commandstats").items()
        }
        return total, per_command

    @staticmethod
    def delta(before: tuple[int, dict[str, int]], after: tuple[int, dict[str, int]]) -> tuple[int, dict[str, int]]:
        """Commands sent between two snapshots, not counting the snapshots' own INFO calls.

        A command is counted once it has run, so ``after`` sees both INFO calls
        of ``before`` and none of its own: two INFO calls to subtract.
        """
        per: dict[str, int] = {}
        for name, calls in after[1].items():
            diff = calls - before[1].get(name, 0)
            if diff:
                per[name] = diff
        per["info"] = per.get("info", 0) - 2
        if per["info"] <= 0:
            del per["info"]
        return after[0] - before[0] - 2, per
