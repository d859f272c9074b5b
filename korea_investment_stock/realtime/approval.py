"""The WebSocket approval key: issued by ``POST /oauth2/Approval``, adopted anew when refused.

Why a callable ``(stale) -> key``: every Approval call kills the app key's previous key (seen), so
a key must be issued once and shared, and a refused key must be replaced by the *newest* one, not
by a fresh issuance per caller. The session asks ``keys(None)`` for the current key and
``keys(stale)`` after a refusal. :class:`LocalApprovalKeys` does this within one process; phase 2
routes the same callable through the token store's single flight so the fleet shares one key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import requests

from .. import transport
from ..errors import ApprovalKeyError, KISConnectionError, MalformedResponseError

__all__ = ["ApprovalKeySource", "LocalApprovalKeys", "issue_approval_key", "mask"]

_log = logging.getLogger(__name__)

ApprovalKeySource = Callable[[str | None], str]


def mask(key: str | None) -> str:
    """An approval key as logs and reprs show it: the first 4 characters only."""
    return "<none>" if not key else f"{key[:4]}***"


def issue_approval_key(
    base_url: str,
    app_key: str,
    app_secret: str,
    *,
    timeout: tuple[float, float] = (3.0, 10.0),
    session: requests.Session | None = None,
) -> str:
    """One ``/oauth2/Approval`` call (the secret goes in ``secretkey``); raises :class:`ApprovalKeyError`."""
    http = session or transport.new_session(1)
    try:
        status, body = transport.request_json(
            http,
            "POST",
            base_url.rstrip("/"),
            "/oauth2/Approval",
            name="the KIS approval endpoint",
            timeout=timeout,
            unreachable=KISConnectionError,
            failed=MalformedResponseError,
            json={"grant_type": "client_credentials", "appkey": app_key, "secretkey": app_secret},
            headers=transport.json_headers(),
        )
    finally:
        if session is None:
            http.close()
    key = body.get("approval_key")
    if status != 200 or not isinstance(key, str) or not key:
        code = body.get("error_code") or body.get("msg_cd") or "?"
        text = body.get("error_description") or body.get("msg1") or ""
        raise ApprovalKeyError(f"KIS refused the approval key (HTTP {status}, {code}: {text})")
    _log.info("issued a WebSocket approval key %s", mask(key))
    return key


class LocalApprovalKeys:
    """One approval key per instance, issued at most once per refusal (in-process single flight)."""

    def __init__(self, issue: Callable[[], str]) -> None:
        self._issue = issue
        self._lock = threading.Lock()
        self._key: str | None = None

    def __call__(self, stale: str | None = None) -> str:
        with self._lock:
            if self._key is not None and self._key != stale:
                return self._key  # current, or someone already replaced the stale one
            self._key = self._issue()
            return self._key

    def __repr__(self) -> str:
        return f"LocalApprovalKeys(key={mask(self._key)})"
