"""The tokenP / revokeP HTTP calls and the mapping of their errors.

KIS answers token errors with HTTP 403 and an ``error_code`` body; the mapping
tells the single flight what may be retried (``EGW00133``: after a wait) and
what may never be (``EGW00103``/``EGW00105``: wrong credentials).  The HTTP
call itself, with its timeout and transport-error mapping, is
:func:`~..transport.request_json`, shared with the client's REST path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import requests

from ..errors import InvalidCredentialsError, TokenIssueError, TokenRateLimitedError
from ..transport import (
    BAD_CREDENTIAL_CODES,
    DEFAULT_TIMEOUT,
    ISSUANCE_LIMIT_CODE,
    call_seconds,
    json_headers,
    kis_code,
    request_json,
)
from ..validation import TimeoutSetting, check_timeout
from .credentials import Credentials, SealedBody
from .record import TokenRecord

logger = logging.getLogger(__name__)

#: (connect, read) seconds for token calls: the transport's default.  KIS answers tokenP
#: in well under a second; ten seconds of read covers a slow day without hanging a fleet.
DEFAULT_TOKEN_TIMEOUT: tuple[float, float] = DEFAULT_TIMEOUT

TOKEN_PATH = "/oauth2/tokenP"
REVOKE_PATH = "/oauth2/revokeP"


class TokenIssuer:
    """Issues and revokes tokens for one app key against one KIS host.

    Takes a :class:`~.credentials.Credentials`, or (0.6.x style) the app key and
    secret, which are wrapped at once; request bodies are sealed so that no
    frame of a failing call shows the secret in its locals.
    """

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        credentials: Credentials | str,
        api_secret: str | None = None,
        timeout: TimeoutSetting = DEFAULT_TOKEN_TIMEOUT,
        before_call: Callable[[], None] | None = None,
    ) -> None:
        if not isinstance(credentials, Credentials):
            credentials = Credentials(credentials, api_secret or "")
        del api_secret
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.timeout = check_timeout(timeout)
        #: Run before each tokenP / revokeP request (the client's rate limiter, when it charges them).
        self._before_call = before_call

    @property
    def call_seconds(self) -> float:
        """The longest one tokenP call may take (every connect attempt plus the read timeout).

        The issuance lease is held at least this long past the issue deadline.
        """
        return call_seconds(self.timeout)

    def __repr__(self) -> str:
        return f"TokenIssuer(base_url={self._base_url!r}, credentials={self.credentials!r})"

    def issue(self) -> TokenRecord:
        """Call tokenP once; return the new record or raise a mapped error."""
        credentials = self.credentials
        body = credentials.sealed_json({"grant_type": "client_credentials", "appkey": credentials.api_key}, "appsecret")
        status, answer = self._post(TOKEN_PATH, body, "tokenP")
        if status == 200 and isinstance(answer.get("access_token"), str):
            return TokenRecord.from_issue_answer(answer, credentials.api_key, credentials.fingerprint)
        raise _issue_error(status, answer)

    def revoke(self, access_token: str) -> dict[str, Any]:
        """Call revokeP for ``access_token``; return KIS's answer or raise ``TokenIssueError``."""
        credentials = self.credentials
        body = credentials.sealed_json({"appkey": credentials.api_key, "token": access_token}, "appsecret")
        status, answer = self._post(REVOKE_PATH, body, "revokeP")
        if status == 200 and str(answer.get("code", "200")) == "200":
            return answer
        code = kis_code(answer)
        message = answer.get("error_description") or answer.get("message") or answer.get("msg1") or ""
        raise TokenIssueError(
            f"revokeP failed: HTTP {status} {code or ''} {message}".strip(),
            code=code,
            status=status,
        )

    def _post(self, path: str, body: SealedBody, name: str) -> tuple[int, dict[str, Any]]:
        if self._before_call is not None:
            self._before_call()
        return request_json(
            self._session,
            "POST",
            self._base_url,
            path,
            name=name,
            timeout=self.timeout,
            unreachable=TokenIssueError,
            failed=TokenIssueError,
            data=body,
            headers=json_headers(),
        )


def _issue_error(status: int, answer: dict[str, Any]) -> TokenIssueError:
    code = kis_code(answer)
    description = answer.get("error_description") or answer.get("msg1") or ""
    if code == ISSUANCE_LIMIT_CODE:
        return TokenRateLimitedError(
            f"KIS refused a new token: {description} ({code}: one issuance per minute per app key)",
            code=code,
            status=status,
        )
    if code in BAD_CREDENTIAL_CODES:
        return InvalidCredentialsError(
            f"KIS rejected the {BAD_CREDENTIAL_CODES[code]}: {description} ({code}). "
            "Check the key and secret for this environment (real and mock differ); retrying cannot help.",
            code=code,
            status=status,
        )
    return TokenIssueError(f"tokenP failed: HTTP {status} {code or ''} {description}".strip(), code=code, status=status)
