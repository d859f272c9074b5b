"""Run the fake KIS server as a process: ``python -m korea_investment_stock.testing``.

Why a process: to test clients that coordinate across processes or run in
containers. Prints one JSON line ``{"url", "app_key", "app_secret"}`` to stdout
once it is serving, then runs until SIGINT or SIGTERM (exit status 0).
Drive it with ``GET /__fake__/stats`` and ``POST /__fake__/control``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from .server import FakeKIS


def _rate_limit(text: str) -> int | None:
    """``none`` or ``0`` (or below) means unlimited."""
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    value = int(text)
    return value if value > 0 else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m korea_investment_stock.testing", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--app-key", default=None, help="default: random 36 chars")
    p.add_argument("--app-secret", default=None, help="default: random 180 chars")
    p.add_argument("--issue-window", type=float, default=60.0, help="seconds between issuances per app key")
    p.add_argument("--issue-window-counts", choices=("success", "request"), default="success")
    p.add_argument("--same-token-window", type=float, default=6 * 3600.0)
    p.add_argument("--token-lifetime", type=float, default=86400.0)
    p.add_argument("--new-token-revokes-old", action="store_true")
    p.add_argument("--dead-token-status", type=int, default=500)
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds every tokenP waits")
    p.add_argument("--rest-rate-limit", type=_rate_limit, default=20, help="per app key per second; 'none' = off")
    p.add_argument("--environment", choices=("real", "mock"), default="real", help="which KIS host to play")
    p.add_argument("--balance-page-size", type=int, default=None, help="default: KIS's size for the host")
    p.add_argument("--orders-page-size", type=int, default=None, help="default: KIS's size for the host")
    return p


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; the JSON line on stdout tells a parent process where."""
    args = _parser().parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    fake = FakeKIS(
        app_key=args.app_key,
        app_secret=args.app_secret,
        host=args.host,
        port=args.port,
        issue_window=args.issue_window,
        issue_window_counts=args.issue_window_counts,
        same_token_window=args.same_token_window,
        token_lifetime=args.token_lifetime,
        new_token_revokes_old=args.new_token_revokes_old,
        dead_token_status=args.dead_token_status,
        rest_rate_limit=args.rest_rate_limit,
        token_delay=args.token_delay,
        environment=args.environment,
        balance_page_size=args.balance_page_size,
        orders_page_size=args.orders_page_size,
    )
    with fake:
        line = json.dumps({"url": fake.url, "app_key": fake.app_key, "app_secret": fake.app_secret})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        while not done.wait(0.5):  # a timed wait keeps signal delivery prompt
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
