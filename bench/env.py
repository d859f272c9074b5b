"""The machine the bench ran on, and a private redis-server for it.

A private server on a free loopback port keeps other programs' commands out
of the ``INFO stats`` deltas the stampede rows report.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

#: How long a fresh redis-server may take to answer PING.
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    """Yield a Redis URL: ``url`` as given, or a private redis-server's; None if neither exists."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    import redis

    workdir = tempfile.mkdtemp(prefix="kis-bench-redis-")
    process: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):  # a port picked free can be taken before the server binds it
            port = free_port()
            process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                    "--logfile",
                    os.path.join(workdir, "redis.log"),
                    "--daemonize",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            candidate = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(candidate, socket_timeout=1.0)
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            ready = False
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    ready = bool(client.ping())
                    break
                except redis.RedisError:
                    time.sleep(0.05)
            client.close()
            if ready:
                yield candidate
                return
            _stop(process)
            process = None
        print("bench: redis-server did not start; Redis rows are skipped", file=sys.stderr)
        yield None
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


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
