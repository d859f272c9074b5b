"""The command line, run as a subprocess against the fake KIS server; plus its helpers in-process.

Every run is checked for leaks: neither the app secret, nor any token the fake
ever issued, nor a Redis password may appear in stdout or stderr.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

import korea_investment_stock
from korea_investment_stock.cli import EXIT_FAILED, EXIT_NO_TOKEN, EXIT_OK, EXIT_USAGE, build_parser, tokens
from korea_investment_stock.cli.environment import EnvironmentCredentials
from korea_investment_stock.redaction import redact_url
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.testing.market import domestic_price, etf_price, overseas_price_detail
from korea_investment_stock.token.credentials import Credentials
from korea_investment_stock.token.file import FileTokenStorage
from korea_investment_stock.token.issuer import TokenIssuer
from korea_investment_stock.token.record import TokenRecord, credential_fingerprint, format_kst, mask_token
from korea_investment_stock.token.status import TokenState

from .redis_fixtures import password_redis, redis_prefix, redis_server_url, redis_url  # noqa: F401

ROOT = Path(korea_investment_stock.__file__).resolve().parents[1]  # what the subprocesses import
REPO = Path(__file__).resolve().parents[1]  # the checkout, also when tox installs the package
ACCOUNT = "12345678-01"
RUN_TIMEOUT = 90.0


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Runs ``python -m korea_investment_stock`` with a controlled environment and checks for leaks."""

    def __init__(self, kis: FakeKIS, token_file: Path, **env: str) -> None:
        self.kis = kis
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KOREA_INVESTMENT_")}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env.update(
            KOREA_INVESTMENT_API_KEY=kis.app_key,
            KOREA_INVESTMENT_API_SECRET=kis.app_secret,
            KOREA_INVESTMENT_ACCOUNT_NO=ACCOUNT,
            KOREA_INVESTMENT_BASE_URL=kis.url,
            KOREA_INVESTMENT_TOKEN_FILE=str(token_file),
        )
        self.env.update(env)
        self.secrets: list[str] = [kis.app_secret]

    def __call__(self, *args: str, drop: tuple[str, ...] = (), **env: str) -> Result:
        run_env = {k: v for k, v in {**self.env, **env}.items() if k not in drop}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "korea_investment_stock", *args],
            check=False,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        result = Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        everything = result.stdout + result.stderr
        for secret in [*self.secrets, run_env.get("KOREA_INVESTMENT_API_SECRET", ""), *self.kis.issued_tokens()]:
            if secret:
                assert secret not in everything, f"{args}: a secret or a full token was printed"
        assert "Traceback" not in result.stderr, result.stderr
        return result


def one_line_error(result: Result, *needles: str) -> str:
    """The stderr of a failed run: exactly one line, naming the command, containing ``needles``."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kis-token ") and ": error: " in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "kis" / "token.key"


@pytest.fixture
def cli(fake_kis: FakeKIS, token_file: Path) -> Cli:
    return Cli(fake_kis, token_file)


def stored(kis: FakeKIS, token_file: Path) -> TokenRecord | None:
    return FileTokenStorage(token_file).stored_record(kis.app_key, kis.app_secret)


# ----------------------------------------------------------------------------------------- token status
def test_status_with_no_token_is_read_only_and_exits_3(cli: Cli, fake_kis: FakeKIS, token_file: Path) -> None:
    result = cli("token", "status")
    assert result.code == EXIT_NO_TOKEN == 3
    assert "none stored" in result.stdout and str(token_file) in result.stdout
    document = cli("token", "status", "--json").json()
    assert document["ok"] is False and document["present"] is False and document["state"] == "missing"
    assert fake_kis.stats.tokenp_requests == 0  # status never issues
    assert not token_file.exists()


def test_refresh_then_status_shows_backend_expiry_and_masked_token(
    cli: Cli, fake_kis: FakeKIS, token_file: Path
) -> None:
    refreshed = cli("token", "refresh", "--json")
    assert refreshed.code == EXIT_OK, refreshed.stderr
    (token,) = fake_kis.issued_tokens()
    body = refreshed.json()
    assert body["ok"] is True and body["token"] == mask_token(token) and body["previous"] is None
    assert body["same_token"] is False and body["issued_by_peer"] is False

    record = stored(fake_kis, token_file)
    assert record is not None and record.access_token == token
    status = cli("token", "status", "--json")
    assert status.code == EXIT_OK
    doc = status.json()
    assert doc["backend"] == "file" and doc["location"] == str(token_file)
    assert doc["token"] == mask_token(token) and doc["state"] == "fresh" and doc["usable"] is True
    assert doc["expires_kst"] == record.expired_text == format_kst(record.expires_at)
    assert 86400 - 120 < doc["seconds_left"] <= 86400
    assert doc["fingerprint"] == credential_fingerprint(fake_kis.app_key, fake_kis.app_secret)[:12]
    assert doc["app_key"] == mask_token(fake_kis.app_key)

    human = cli("token", "status")
    assert human.code == EXIT_OK
    assert f"expires:     {record.expired_text} KST" in human.stdout
    assert "time left:   23h " in human.stdout and "backend:     file" in human.stdout
    assert fake_kis.stats.tokenp_requests == 1  # the two status runs issued nothing


def test_status_of_an_expired_token_exits_3(cli: Cli, fake_kis: FakeKIS, token_file: Path) -> None:
    body = {"access_token": "eyJ.expired-token-value.sig", "access_token_token_expired": format_kst(time.time() - 90)}
    record = TokenRecord.from_issue_response(body, fake_kis.app_key, fake_kis.app_secret)
    FileTokenStorage(token_file).save_token(record.to_legacy_dict(fake_kis.app_secret))
    result = cli("token", "status")
    assert result.code == EXIT_NO_TOKEN
    assert "EXPIRED" in result.stdout and "expired 1m " in result.stdout


def test_json_may_come_before_or_after_the_command(cli: Cli) -> None:
    before = cli("--json", "token", "status")
    after = cli("token", "status", "--json")
    assert before.code == after.code == EXIT_NO_TOKEN
    assert before.json()["command"] == after.json()["command"] == "token status"


# ---------------------------------------------------------------------------------------- token refresh
def test_refresh_inside_the_minute_fails_fast_then_succeeds_after_it(
    cli: Cli, fake_kis: FakeKIS, token_file: Path
) -> None:
    assert cli("token", "refresh").code == EXIT_OK
    (token,) = fake_kis.issued_tokens()

    refused = cli("token", "refresh", "--deadline", "0")
    assert refused.code == EXIT_FAILED
    line = [ln for ln in refused.stderr.splitlines() if ": error: " in ln]
    assert len(line) == 1 and "EGW00133" in line[0] and "one token issuance per minute" in line[0]
    assert refused.seconds < 15.0
    assert fake_kis.stats.tokenp_rejected == {"EGW00133": 1}  # one try, no retry past the deadline
    refused_json = cli("token", "refresh", "--deadline", "0", "--json")
    assert refused_json.code == EXIT_FAILED
    assert refused_json.json() == {
        "command": "token refresh",
        "ok": False,
        "error": refused_json.json()["error"],
        "exit_code": EXIT_FAILED,
    }
    assert "EGW00133" in refused_json.json()["error"]
    record = stored(fake_kis, token_file)
    assert record is not None and record.access_token == token  # the fleet's token was never touched

    fake_kis.advance(61)
    again = cli("token", "refresh", "--json")
    assert again.code == EXIT_OK
    assert again.json()["same_token"] is True  # KIS re-answers the same token within 6 hours
    assert fake_kis.stats.tokens_issued == 1


def test_refresh_replaces_a_token_kis_revoked(cli: Cli, fake_kis: FakeKIS, token_file: Path) -> None:
    assert cli("token", "refresh").code == EXIT_OK
    fake_kis.revoke_all()
    fake_kis.advance(61)
    result = cli("token", "refresh")
    assert result.code == EXIT_OK
    assert "new token stored" in result.stdout
    old, new = fake_kis.issued_tokens()
    record = stored(fake_kis, token_file)
    assert record is not None and record.access_token == new != old


def test_wrong_secret_fails_fast_and_is_never_printed(cli: Cli, fake_kis: FakeKIS) -> None:
    wrong = "wrong-secret-" + "z" * 60
    for args in (("token", "refresh"), ("price", "005930"), ("token", "refresh", "--json")):
        result = cli(*args, KOREA_INVESTMENT_API_SECRET=wrong)
        assert result.code == EXIT_FAILED
        assert result.seconds < 5.0 + 5.0  # no 65 s "one per minute" wait (the rest is interpreter start-up)
        one_line_error(result, "EGW00105", "retrying cannot help")
        assert wrong not in result.stdout + result.stderr
    assert fake_kis.stats.tokenp_requests == 3  # one per run
    assert fake_kis.stats.tokenp_rejected == {"EGW00105": 3}


# ----------------------------------------------------------------------------------- revoke and clear
def test_revoke_kills_the_token_at_kis_and_in_the_store(cli: Cli, fake_kis: FakeKIS, token_file: Path) -> None:
    assert cli("token", "refresh").code == EXIT_OK
    (token,) = fake_kis.issued_tokens()
    result = cli("token", "revoke", "--json")
    assert result.code == EXIT_OK
    doc = result.json()
    assert doc["token"] == mask_token(token) and doc["removed"] is True and doc["already_dead"] is False
    assert fake_kis.stats.revoke_requests == 1
    assert stored(fake_kis, token_file) is None
    assert cli("token", "status").code == EXIT_NO_TOKEN

    again = cli("token", "revoke")
    assert again.code == EXIT_NO_TOKEN
    one_line_error(again, "nothing to revoke")
    assert fake_kis.stats.revoke_requests == 1


def test_revoke_removes_a_token_kis_no_longer_knows(cli: Cli, fake_kis: FakeKIS, token_file: Path) -> None:
    body = {"access_token": "eyJ.never-issued-by-kis.sig", "access_token_token_expired": format_kst(time.time() + 3600)}
    record = TokenRecord.from_issue_response(body, fake_kis.app_key, fake_kis.app_secret)
    FileTokenStorage(token_file).save_token(record.to_legacy_dict(fake_kis.app_secret))
    result = cli("token", "revoke")
    assert result.code == EXIT_OK
    assert "already dead" in result.stdout and "removed" in result.stdout
    assert stored(fake_kis, token_file) is None


def test_revoke_network_failure_keeps_the_token(cli: Cli, fake_kis: FakeKIS, token_file: Path) -> None:
    assert cli("token", "refresh").code == EXIT_OK
    result = cli("token", "revoke", "--base-url", closed_port_url())
    assert result.code == EXIT_FAILED
    one_line_error(result, "cannot reach revokeP")
    assert stored(fake_kis, token_file) is not None


def test_clear_forgets_the_token_without_telling_kis(cli: Cli, fake_kis: FakeKIS, token_file: Path) -> None:
    assert cli("token", "refresh").code == EXIT_OK
    result = cli("token", "clear")
    assert result.code == EXIT_OK and "removed the stored token" in result.stdout
    assert stored(fake_kis, token_file) is None
    assert cli("token", "status").code == EXIT_NO_TOKEN
    again = cli("token", "clear", "--json")
    assert again.code == EXIT_OK and again.json()["removed"] is False
    assert fake_kis.stats.revoke_requests == 0


# ---------------------------------------------------------------------------------------------- health
def test_health_reports_storage_and_kis(cli: Cli, fake_kis: FakeKIS) -> None:
    result = cli("health", "--json")
    assert result.code == EXIT_OK
    checks = {c["name"]: c for c in result.json()["checks"]}
    assert set(checks) == {"storage (file)", "rate limit", "kis host"}
    assert checks["rate limit"]["backend"] == "file" and checks["rate limit"]["rate"] == 18.5
    assert all(c["ok"] and c["rtt_ms"] is not None and c["rtt_ms"] >= 0 for c in checks.values())
    assert fake_kis.url in checks["kis host"]["detail"]
    human = cli("health")
    assert human.code == EXIT_OK and human.stdout.count("ok  ") == 3
    assert fake_kis.stats.tokenp_requests == 0


def test_health_fails_when_kis_is_unreachable(cli: Cli) -> None:
    result = cli("health", "--base-url", closed_port_url())
    assert result.code == EXIT_FAILED
    lines = result.stdout.splitlines()
    assert any(ln.startswith("ok") and "storage (file)" in ln for ln in lines)
    assert any(ln.startswith("FAIL") and "kis host" in ln and "cannot connect" in ln for ln in lines)


def test_health_fails_when_the_token_file_cannot_be_written(cli: Cli, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    result = cli("health", "--json", KOREA_INVESTMENT_TOKEN_FILE=str(blocker / "token.key"))
    assert result.code == EXIT_FAILED
    (storage_check,) = [c for c in result.json()["checks"] if c["name"] == "storage (file)"]
    assert storage_check["ok"] is False


# ----------------------------------------------------------------------------------------------- price
def test_price_of_a_korean_stock_an_etf_and_a_us_stock(cli: Cli, fake_kis: FakeKIS) -> None:
    stock = cli("price", "005930")
    assert stock.code == EXIT_OK, stock.stderr
    assert "삼성전자" in stock.stdout and domestic_price("005930")["stck_prpr"] in stock.stdout
    etf = cli("price", "069500", "--json").json()
    assert etf["kind"] == "ETF" and etf["price"] == etf_price("069500")["stck_prpr"] and etf["currency"] == "KRW"
    us = cli("price", "AAPL", "--market", "us", "--json").json()
    assert us["market"] == "NAS" and us["price"] == overseas_price_detail("NAS", "AAPL")["last"]
    assert fake_kis.stats.tokenp_requests == 1  # later runs reuse the stored token


def test_price_of_an_unknown_symbol_fails(cli: Cli) -> None:
    result = cli("price", "NOPE", "--market", "US")
    assert result.code == EXIT_FAILED
    one_line_error(result, "no data", "NOPE")


def test_price_of_an_unknown_korean_symbol_fails_by_the_librarys_rule(cli: Cli) -> None:
    result = cli("price", "0059300")  # the library's fetch_domestic_quote raises; the CLI adds the --market hint
    assert result.code == EXIT_FAILED
    one_line_error(result, "no data", "0059300", "--market", "SymbolNotFoundError")


# --------------------------------------------------------------------------------- usage and config
def test_missing_credentials_are_a_configuration_error(cli: Cli) -> None:
    result = cli("token", "status", drop=("KOREA_INVESTMENT_API_KEY", "KOREA_INVESTMENT_API_SECRET"))
    assert result.code == EXIT_USAGE == 2
    one_line_error(result, "KOREA_INVESTMENT_API_KEY", "KOREA_INVESTMENT_API_SECRET")
    as_json = cli("token", "refresh", "--json", drop=("KOREA_INVESTMENT_API_SECRET",))
    assert as_json.code == EXIT_USAGE
    assert as_json.json()["exit_code"] == EXIT_USAGE and "KOREA_INVESTMENT_API_SECRET" in as_json.json()["error"]


def test_bad_storage_and_bad_host_are_configuration_errors(cli: Cli) -> None:
    bad_storage = cli("token", "status", KOREA_INVESTMENT_TOKEN_STORAGE="floppy")
    assert bad_storage.code == EXIT_USAGE
    one_line_error(bad_storage, "floppy", "file, redis")
    bad_host = cli("token", "refresh", "--base-url", "ftp://example.invalid")
    assert bad_host.code == EXIT_USAGE
    prefix_on_file = cli("token", "status", "--key-prefix", "x")
    assert prefix_on_file.code == EXIT_USAGE
    one_line_error(prefix_on_file, "redis storage only")


@pytest.mark.parametrize(
    "args",
    [(), ("token",), ("price",), ("token", "explode"), ("demo", "--processes", "0"), ("price", "X", "--market", "JP")],
)
def test_usage_errors_exit_2(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == EXIT_USAGE
    assert "error" in result.stderr


def test_help_lists_every_command_and_the_exit_codes() -> None:
    text = build_parser().format_help()
    for word in ("token", "health", "price", "demo", "3 no usable token"):
        assert word in text
    token_help = subprocess.run(
        [sys.executable, "-m", "korea_investment_stock", "token", "--help"],
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert token_help.returncode == 0
    for action in ("status", "refresh", "revoke", "clear"):
        assert action in token_help.stdout


def test_console_script_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["kis-token"] == "korea_investment_stock.cli:main"


# ------------------------------------------------------------------------------------------------ demo
def test_demo_shows_one_issuance(cli: Cli) -> None:
    doc = cli("demo", "--processes", "2", "--threads", "4", "--json")
    assert doc.code == EXIT_OK, doc.stderr
    summary = doc.json()
    assert summary["ok"] is True and summary["callers"] == 8
    assert summary["tokenp_calls"] == 1 and summary["errors"] == 0 and summary["distinct_tokens"] == 1
    human = cli("demo", "--processes", "2", "--threads", "2")
    assert human.code == EXIT_OK
    assert "tokenP calls:   1" in human.stdout and "shared token:   yes" in human.stdout
    assert human.stderr == ""  # the progress line is for terminals only


# ----------------------------------------------------------------------------------------- real Redis
@pytest.mark.real_redis
def test_token_commands_on_redis(fake_kis: FakeKIS, token_file: Path, redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    cli = Cli(fake_kis, token_file, KOREA_INVESTMENT_TOKEN_STORAGE="redis", KOREA_INVESTMENT_REDIS_URL=redis_url)
    prefix = ("--key-prefix", redis_prefix)
    assert cli("token", "status", *prefix).code == EXIT_NO_TOKEN
    assert cli("token", "refresh", *prefix).code == EXIT_OK
    (token,) = fake_kis.issued_tokens()
    doc = cli("token", "status", "--json", *prefix).json()
    port = redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
    assert doc["backend"] == "redis" and f"127.0.0.1:{port}" in doc["location"] and redis_prefix in doc["location"]
    assert doc["token"] == mask_token(token) and doc["usable"] is True
    from_variable = cli("token", "status", "--json", KOREA_INVESTMENT_REDIS_KEY_PREFIX=redis_prefix).json()
    assert from_variable["token"] == doc["token"]  # the variable names the same keys as --key-prefix
    health = cli("health", "--json", *prefix)
    assert health.code == EXIT_OK
    (redis_check,) = [c for c in health.json()["checks"] if c["name"] == "storage (redis)"]
    assert redis_check["ok"] is True and redis_check["rtt_ms"] is not None
    assert cli("token", "revoke", *prefix).code == EXIT_OK
    assert fake_kis.stats.revoke_requests == 1
    assert cli("token", "status", *prefix).code == EXIT_NO_TOKEN
    assert not token_file.exists()  # the file store was never used


@pytest.mark.real_redis
def test_redis_password_is_never_printed(fake_kis: FakeKIS, token_file: Path, password_redis: Any) -> None:  # noqa: F811
    password = password_redis.password
    url = f"redis://:{password}@127.0.0.1:{password_redis.port}/0"
    cli = Cli(fake_kis, token_file, KOREA_INVESTMENT_TOKEN_STORAGE="redis", KOREA_INVESTMENT_REDIS_URL=url)
    cli.secrets.append(password)
    prefix = ("--key-prefix", f"kis-cli-test:{os.getpid()}:{time.time_ns()}")
    assert cli("token", "refresh", *prefix).code == EXIT_OK
    status = cli("token", "status", *prefix)
    assert status.code == EXIT_OK and ":***@127.0.0.1" in status.stdout

    wrong = cli(
        "health",
        *prefix,
        KOREA_INVESTMENT_REDIS_URL=f"redis://127.0.0.1:{password_redis.port}/0",
        KOREA_INVESTMENT_REDIS_PASSWORD="not-the-password-" + "q" * 12,
    )
    assert wrong.code == EXIT_FAILED
    assert "not-the-password" not in wrong.stdout + wrong.stderr
    assert any(ln.startswith("FAIL") and "storage (redis)" in ln for ln in wrong.stdout.splitlines())
    cli.secrets.append("not-the-password-" + "q" * 12)
    failing = cli(
        "token",
        "status",
        *prefix,
        KOREA_INVESTMENT_REDIS_PASSWORD="not-the-password-" + "q" * 12,
        KOREA_INVESTMENT_REDIS_URL=f"redis://127.0.0.1:{password_redis.port}/0",
    )
    assert failing.code == EXIT_FAILED
    one_line_error(failing, "Redis")


def test_unreachable_redis_is_a_failure_not_a_traceback(fake_kis: FakeKIS, token_file: Path) -> None:
    url = closed_port_url().replace("http://", "redis://") + "/0"
    cli = Cli(fake_kis, token_file, KOREA_INVESTMENT_TOKEN_STORAGE="redis", KOREA_INVESTMENT_REDIS_URL=url)
    status = cli("token", "status")
    assert status.code == EXIT_FAILED
    one_line_error(status, "cannot reach Redis")
    health = cli("health")
    assert health.code == EXIT_FAILED
    assert any(ln.startswith("ok") and "kis host" in ln for ln in health.stdout.splitlines())


# --------------------------------------------------------------------------------- helpers, in-process
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:hunter2@cache:6380/1", "redis://:***@cache:6380/1"),
        ("redis://user:hunter2@cache/0", "redis://:***@cache/0"),
        (
            "rediss://cache:6379/0?password=hunter2&ssl_cert_reqs=none",
            "rediss://cache:6379/0?password=%2A%2A%2A&ssl_cert_reqs=none",
        ),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "hunter2" not in redact_url(url)
    assert redact_url("redis://cache:6379/0", has_password=True) == "redis://:***@cache:6379/0"


def test_status_states(fake_kis: FakeKIS, token_file: Path) -> None:
    storage = FileTokenStorage(token_file)
    creds = Credentials(fake_kis.app_key, fake_kis.app_secret)
    assert storage.status(creds.api_key, creds.secret()).state is TokenState.MISSING
    for lifetime, state in ((3600, "fresh"), (60, "stale"), (-60, "expired")):
        body = {
            "access_token": f"eyJ.{state}-token-0123.sig",
            "access_token_token_expired": format_kst(time.time() + lifetime),
        }
        storage.save_token(
            TokenRecord.from_issue_response(body, creds.api_key, creds.secret()).to_legacy_dict(creds.secret())
        )
        status = storage.status(creds.api_key, creds.secret())
        assert status.state is TokenState(state) and status.usable is (state != "expired")
        assert status.to_dict()["state"] == state and status.fingerprint == creds.fingerprint[:12]
        assert status.token == mask_token(f"eyJ.{state}-token-0123.sig")


def test_credentials_from_env_name_what_is_missing() -> None:
    with pytest.raises(korea_investment_stock.ConfigurationError, match="KOREA_INVESTMENT_API_SECRET"):
        EnvironmentCredentials.from_env({"KOREA_INVESTMENT_API_KEY": "k" * 36})
    creds = EnvironmentCredentials.from_env({"KOREA_INVESTMENT_API_KEY": "k" * 36}, need_secret=False)
    assert creds.api_secret == "" and "secret" not in repr(creds).replace("api_secret", "")
    full = EnvironmentCredentials.from_env(
        {"KOREA_INVESTMENT_API_KEY": "k" * 36, "KOREA_INVESTMENT_API_SECRET": "s3cr3t" * 10}
    )
    assert "s3cr3t" not in repr(full) and "s3cr3t" not in repr(full.credentials)


def test_forced_refresh_keeps_the_old_token_readable_meanwhile(fake_kis_factory: Any, token_file: Path) -> None:
    kis = fake_kis_factory(issue_window=0, same_token_window=0)  # every tokenP mints a new token
    storage = FileTokenStorage(token_file)
    creds = Credentials(kis.app_key, kis.app_secret)
    entered, release = threading.Event(), threading.Event()

    class HeldIssuer:
        """tokenP, held open until the test has looked at the store."""

        def issue(self) -> TokenRecord:
            entered.set()
            assert release.wait(30)
            return real.issue()

    with requests.Session() as http:
        real = TokenIssuer(http, kis.url, kis.app_key, kis.app_secret)
        tokens.refresh_token(storage, creds, real)
        first = storage.stored_record(kis.app_key, kis.app_secret)
        assert first is not None
        outcome: list[tokens.RefreshResult] = []
        worker = threading.Thread(target=lambda: outcome.append(tokens.refresh_token(storage, creds, HeldIssuer())))
        worker.start()
        try:
            assert entered.wait(30)  # the refresh holds the lock and is inside tokenP
            during = FileTokenStorage(token_file).stored_record(kis.app_key, kis.app_secret)
            assert during is not None and during.is_valid() and during.access_token == first.access_token
        finally:
            release.set()
            worker.join(30)
    (result,) = outcome
    assert result.previous == mask_token(first.access_token) and result.same_token is False
    after = storage.stored_record(kis.app_key, kis.app_secret)
    assert after is not None and after.access_token == kis.issued_tokens()[-1] != first.access_token
    assert kis.stats.tokenp_requests == 2


def test_forced_refresh_does_not_repeat_a_peers_refresh(fake_kis_factory: Any, token_file: Path) -> None:
    kis = fake_kis_factory(issue_window=0, same_token_window=0)
    creds = Credentials(kis.app_key, kis.app_secret)
    peer = Cli(kis, token_file)

    class PeerRefreshesFirst(FileTokenStorage):
        """While we wait for the lock, another process refreshes and stores its token."""

        def _new_lease(self, credentials: Any) -> Any:
            if not peer_done:
                peer_done.append(peer("token", "refresh"))
            return super()._new_lease(credentials)

    peer_done: list[Result] = []
    with requests.Session() as http:
        issuer = TokenIssuer(http, kis.url, kis.app_key, kis.app_secret)
        tokens.refresh_token(FileTokenStorage(token_file), creds, issuer)
        result = tokens.refresh_token(PeerRefreshesFirst(token_file), creds, issuer)
    assert peer_done[0].code == 0, peer_done[0].stderr
    assert result.issued_by_peer is True
    assert kis.stats.tokenp_requests == 2  # ours and the peer's; not a third
    assert result.token == mask_token(kis.issued_tokens()[-1])


# ------------------------------------------------------------------------------------------ interrupt
@pytest.mark.parametrize("as_json", [True, False])
def test_an_interrupt_is_reported_and_with_json_as_an_error_object(cli: Cli, as_json: bool) -> None:
    """Ctrl-C (SIGINT) while the command waits on a host that never answers: exit 130, and with
    --json one error object on stdout, so a script reading stdout never gets nothing."""
    import signal

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    got_request = threading.Event()

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            got_request.set()  # the command now waits for an answer that never comes
            conn.recv(1)  # until the client goes away

    server = threading.Thread(target=accept, daemon=True)
    server.start()
    port = listener.getsockname()[1]
    args = [sys.executable, "-m", "korea_investment_stock", "health", "--timeout", "60"]
    args += ["--json"] if as_json else []
    proc = subprocess.Popen(
        args,
        env={**cli.env, "KOREA_INVESTMENT_BASE_URL": f"http://127.0.0.1:{port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert got_request.wait(RUN_TIMEOUT), "the command never reached the host"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "kis-token health: " in stderr and "interrupted" in stderr
    if as_json:
        document = json.loads(stdout)
        assert document == {"command": "health", "ok": False, "error": "interrupted", "exit_code": 130}
    else:
        assert stdout == ""


@pytest.mark.real_redis
def test_demo_on_redis_starts_and_stops_a_private_server(cli: Cli) -> None:
    from .redis_fixtures import require_redis_server

    require_redis_server()
    doc = cli("demo", "--storage", "redis", "--processes", "2", "--threads", "3", "--json")
    assert doc.code == EXIT_OK, doc.stderr
    summary = doc.json()
    assert summary["storage"] == "redis" and summary["tokenp_calls"] == 1 and summary["errors"] == 0
    port = int(summary["redis_url"].rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as probe:  # stopped when the demo ended
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_demo_on_redis_without_a_server_says_what_is_missing(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("redis")
    result = cli("demo", "--storage", "redis", "--processes", "1", "--threads", "1", PATH=str(tmp_path))
    assert result.code == EXIT_USAGE
    one_line_error(result, "redis-server is not on PATH", "--redis-url", "KOREA_INVESTMENT_REDIS_URL")
