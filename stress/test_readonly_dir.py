"""Read-only token directory: a clear warning, and the library keeps working in memory.

How the directory is made read-only matters, because the suite usually runs as
root and root ignores permission bits (``chmod 555`` would not stop it writing):

1. root with mount rights: the worker runs in its own mount namespace
   (``unshare --mount``) where the directory is bind-mounted onto itself and
   remounted read-only.  Every write then fails with ``EROFS``, exactly as on a
   read-only root filesystem (containers with ``readOnlyRootFilesystem``, a
   read-only home), and nothing outside the worker sees the mount.
2. root without mount rights (an unprivileged container): the directory is
   ``chmod 555`` and the worker runs under ``setpriv`` with ``CAP_DAC_OVERRIDE``,
   ``CAP_DAC_READ_SEARCH`` and ``CAP_FOWNER`` dropped from its bounding set, so
   root obeys the permission bits: writes fail with ``EACCES``.
3. not root: ``chmod 555`` alone.

All three reach the same code path: the lock file cannot be created and the
token file cannot be written.  (A path whose parent is a regular file was
rejected: that fails with ``ENOTDIR`` when creating the directory, which is a
misconfiguration the library reports as an error, not a read-only directory.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .harness import Outcome, error_sample, summarize

ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL, THREADS = 5, 20
DROPPED_CAPS = "-dac_override,-dac_read_search,-fowner"


def _can_unshare() -> bool:
    if os.environ.get("KIS_STRESS_READONLY_METHOD") == "chmod":  # to exercise the fallbacks on purpose
        return False
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        return False
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "true"], check=False, capture_output=True, timeout=10
    )
    return probe.returncode == 0


def _command(directory: Path, spec: dict) -> tuple[list[str], dict, str]:
    env = {
        **os.environ,
        "KOREA_INVESTMENT_TOKEN_FILE": str(directory / "token.key"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    worker = [sys.executable, "-m", "stress.workers", "readonly", json.dumps(spec)]
    if _can_unshare():
        env.update(RO_DIR=str(directory))
        script = 'mount --bind "$RO_DIR" "$RO_DIR" && mount -o remount,bind,ro "$RO_DIR" && exec "$@"'
        unshare = [shutil.which("unshare"), "--mount", "--propagation", "private"]
        return [*unshare, "sh", "-c", script, "sh", *worker], env, "unshare-ro-bind-mount"
    directory.chmod(0o555)
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is not None:
        return [setpriv, "--bounding-set", DROPPED_CAPS, "--", *worker], env, "setpriv-no-dac-chmod-555"
    if os.geteuid() == 0:
        pytest.skip(
            "running as root with neither mount rights (unshare) nor setpriv: cannot make a directory read-only"
        )
    return worker, env, "chmod-555"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("existing", ["empty-dir", "stale-token-and-lock"])
def test_read_only_token_directory(existing, tmp_path, kis_factory, issuance_clock, report):
    kis = kis_factory()  # KIS's real 60 s window: a second issuance would cost a minute and fail
    clock = issuance_clock(kis)
    directory = tmp_path / "ro"
    directory.mkdir()
    if existing == "stale-token-and-lock":
        (directory / "token.key.lock").touch()
        (directory / "token.key").write_text('{"format": "korea-investment-stock/tokens", "version": 1, "tokens": {}}')
    spec = {
        "url": kis.url,
        "app_key": kis.app_key,
        "app_secret": kis.app_secret,
        "sequential": SEQUENTIAL,
        "threads": THREADS,
    }
    command, env, method = _command(directory, spec)
    before = sorted(os.listdir(directory))
    started = time.perf_counter()
    done = subprocess.run(command, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = [Outcome.from_dict(d) for d in result["outcomes"]]
    warnings = result["warnings"]
    figures = report(
        summarize(
            f"read-only-dir[{existing}]", "file", outcomes, kis, clock, wall, method=method, warnings=len(warnings)
        )
    )

    assert figures.errors == 0, error_sample(outcomes)
    assert figures.tokenp_requests == 1, "the token kept in memory was not shared within the process"
    assert len({o.token for o in outcomes}) == 1
    assert any("cannot write token file" in w and "keeping the token in memory" in w for w in warnings), warnings
    assert len(warnings) <= 4 * (SEQUENTIAL + THREADS), "warned on every call"
    assert sorted(os.listdir(directory)) == before, "something was written into the read-only directory"
    directory.chmod(0o755)  # let tmp_path cleanup remove it


@pytest.mark.timeout(120)
def test_read_only_store_redis_replica(own_redis, redis_prefix, kis_factory, issuance_clock, report):
    """The Redis counterpart: ``KOREA_INVESTMENT_REDIS_URL`` points at a read-only replica.

    Here "keep working in memory" would be wrong: without the shared lease every
    process would issue on its own and all but one would then wait out KIS's
    one-minute window.  The promise is a clear error at once, no tokenP call (KIS
    is not stampeded), and recovery as soon as the server accepts writes.
    """
    from korea_investment_stock.errors import StorageError

    from .conftest import Backend
    from .harness import client_wave
    from .workers import make_storage

    kis = kis_factory()
    clock = issuance_clock(kis)
    server = own_redis(None, "--replicaof", "127.0.0.1", str(_closed_port()))
    spec = Backend("redis", redis_url=server.url, key_prefix=redis_prefix).spec(kis)
    storages = [make_storage(spec) for _ in range(THREADS)]
    started = time.perf_counter()
    during = client_wave(spec, THREADS, storages)
    admin = server.client()
    try:
        admin.execute_command("REPLICAOF", "NO", "ONE")
    finally:
        admin.close()
    recovered = client_wave(spec, THREADS, storages)
    wall = time.perf_counter() - started
    figures = report(
        summarize(
            "read-only-store[redis-replica]",
            "redis",
            during + recovered,
            kis,
            clock,
            wall,
            error_s=round(max(o.elapsed for o in during), 2),
        )
    )

    for o in during:
        assert not o.ok and isinstance(o.extra["exc"], StorageError), f"{o.error_type}: {o.error}"
        assert "READONLY" in o.error or "read only" in o.error.lower(), o.error
        assert o.elapsed < 3.5
    assert all(o.ok for o in recovered), error_sample(recovered)
    assert figures.tokenp_requests == 1, "the read-only store let callers stampede tokenP"


def _closed_port() -> int:
    from testsupport import free_port

    return free_port()
