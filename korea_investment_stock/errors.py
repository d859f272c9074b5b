"""One small exception hierarchy, rooted at :class:`KoreaInvestmentError`.

Callers catch the root to handle "anything from this library"; the subclasses say
what went wrong and whether retrying can help.  No message ever carries an app
secret, a token or a password.
"""

from __future__ import annotations


class KoreaInvestmentError(Exception):
    """Root of every error this library raises on purpose."""


class ConfigurationError(KoreaInvestmentError, ValueError):
    """Bad arguments or environment variables; fix the configuration, do not retry."""


class TokenError(KoreaInvestmentError):
    """Getting, storing or waiting for an access token failed."""


class TokenIssueError(TokenError):
    """``POST /oauth2/tokenP`` failed.

    ``code`` is KIS's ``error_code`` (e.g. ``EGW00133``) when KIS gave one, and
    ``status`` the HTTP status when there was a response.
    """

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class TokenRateLimitedError(TokenIssueError):
    """KIS allows one issuance per minute per app key (``EGW00133``).

    Raised only after the issue deadline passed while waiting for the window to
    reopen; by then no peer stored a token either.
    """


class InvalidCredentialsError(TokenIssueError):
    """The app key (``EGW00103``) or app secret (``EGW00105``) is wrong.

    Permanent: retrying cannot help, so the library never retries it.
    """


class TokenWaitTimeout(TokenError):
    """Waited for another thread, process or server to issue a token, and gave up.

    Every wait in this library is finite; this is what the end of one looks like.
    """


class StorageError(KoreaInvestmentError):
    """The token store could not be read or written."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The token store (e.g. Redis) cannot be reached right now.

    Also a builtin :class:`ConnectionError`, as 0.6.1's unreachable-Redis error
    was, so ``except ConnectionError`` keeps catching it.
    """


class KISAPIError(KoreaInvestmentError):
    """A REST call failed in a way the caller cannot treat as data.

    ``msg_cd`` / ``msg1`` carry KIS's code and message when the body had them.
    """

    def __init__(
        self,
        message: str,
        *,
        msg_cd: str | None = None,
        msg1: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.msg_cd = msg_cd
        self.msg1 = msg1
        self.status = status


class RateLimitExceededError(KISAPIError):
    """KIS kept answering ``EGW00201`` (per-second limit) after bounded retries."""


class KISConnectionError(KISAPIError):
    """The KIS host could not be reached, or did not answer within the timeout."""


class MasterFileError(KoreaInvestmentError, ValueError):
    """A symbol master file could not be downloaded, or is not what KIS publishes.

    Raised for a failed download, a corrupt, oversized or path-escaping zip, a
    line that is not cp949 or a record shorter than the fixed-width layout.
    Nothing is written when it is raised.
    """


__all__ = [
    "ConfigurationError",
    "InvalidCredentialsError",
    "KISAPIError",
    "KISConnectionError",
    "KoreaInvestmentError",
    "MasterFileError",
    "RateLimitExceededError",
    "StorageError",
    "StorageUnavailableError",
    "TokenError",
    "TokenIssueError",
    "TokenRateLimitedError",
    "TokenWaitTimeout",
]
