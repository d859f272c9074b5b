"""The tokenP / revokeP HTTP calls and the mapping of their errors.

KIS answers token errors with HTTP 403 and an ``error_code`` body; the mapping
tells the single flight what may be retried (``EGW00133``: after a wait) and
what may never be (``EGW00103``/``EGW00105``: wrong credentials).
:func:`request_json`, the one HTTP call with its timeout and transport-error
mapping, is shared with the client's REST path.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

import requests
import requests.auth

from ..errors import InvalidCredentialsError, KISAPIError, TokenIssueError, TokenRateLimitedError
from .credentials import Credentials, SealedBody
from .record import TokenRecord

logger = logging.getLogger(__name__)

#: (connect, read) seconds for token calls.  KIS answers tokenP in well under a
#: second; ten seconds of read covers a slow day without hanging a fleet.
DEFAULT_TOKEN_TIMEOUT: tuple[float, float] = (3.05, 10.0)

TOKEN_PATH = "/oauth2/tokenP"
REVOKE_PATH = "/oauth2/revokeP"

RATE_LIMIT_CODE = "EGW00133"
BAD_CREDENTIAL_CODES = {"EGW00103": "app key", "EGW00105": "app secret"}


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
        timeout: tuple[float, float] = DEFAULT_TOKEN_TIMEOUT,
    ) -> None:
        if not isinstance(credentials, Credentials):
            credentials = Credentials(credentials, api_secret or "")
        del api_secret
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout

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
        code = answer.get("error_code") or answer.get("msg_cd")
        message = answer.get("error_description") or answer.get("message") or answer.get("msg1") or ""
        raise TokenIssueError(
            f"revokeP failed: HTTP {status} {code or ''} {message}".strip(),
            code=code if isinstance(code, str) else None,
            status=status,
        )

    def _post(self, path: str, body: SealedBody, name: str) -> tuple[int, dict[str, Any]]:
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
            headers={"content-type": "application/json; charset=utf-8"},
        )


class CredentialHeaders(requests.auth.AuthBase):
    """Adds ``appkey``/``appsecret`` (and ``authorization``) to a request as ``requests`` sends it.

    The headers dict a caller builds then carries no secret, so neither does
    any frame's locals when a call fails.
    """

    def __init__(self, credentials: Credentials, authorization: str | None = None) -> None:
        self._credentials = credentials
        self._authorization = authorization

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._authorization is not None:
            request.headers["authorization"] = self._authorization
        request.headers["appkey"] = self._credentials.api_key
        request.headers["appsecret"] = self._credentials.secret()
        return request

    def __repr__(self) -> str:
        return f"CredentialHeaders({self._credentials!r})"


#: The error classes :func:`request_json` raises: both take ``(message, status=...)``.
ErrorClass: TypeAlias = type[TokenIssueError] | type[KISAPIError]


def request_json(
    session: requests.Session,
    method: str,
    base_url: str,
    path: str,
    *,
    name: str,
    timeout: tuple[float, float],
    unreachable: ErrorClass,
    failed: ErrorClass,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    """One KIS HTTP call: ``(status, decoded JSON object)``, whatever the status.

    The token calls and the client's REST path share it, so every KIS call has
    a timeout and the same mapping: no answer or no connection raises
    ``unreachable``; an answer that is not a JSON object raises ``failed``.
    Exceptions are not chained, so no header or body (secrets) reaches a traceback.
    """
    try:
        response = session.request(method, base_url + path, timeout=timeout, **kwargs)
    except requests.Timeout:
        raise unreachable(f"{name} at {base_url} did not answer within {timeout[1]:g}s") from None
    except requests.RequestException as exc:
        raise unreachable(f"cannot reach {name} at {base_url}: {type(exc).__name__}") from None
    status = response.status_code
    try:  # apart: requests' JSONDecodeError is a RequestException too, but the host did answer
        answer = response.json()
    except ValueError:
        raise failed(f"{name} answered HTTP {status} with a body that is not JSON", status=status) from None
    if not isinstance(answer, dict):
        raise failed(f"{name} answered HTTP {status} with JSON that is not an object", status=status)
    return status, answer


def _issue_error(status: int, answer: dict[str, Any]) -> TokenIssueError:
    code = answer.get("error_code") or answer.get("msg_cd")
    code = code if isinstance(code, str) else None
    description = answer.get("error_description") or answer.get("msg1") or ""
    if code == RATE_LIMIT_CODE:
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
