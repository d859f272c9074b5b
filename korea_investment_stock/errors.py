"""Every exception this library raises, in one tree rooted at :class:`KoreaInvestmentError`.

Callers catch the root to handle "anything from this library"; the subclasses
say what went wrong and whether retrying can help.  Where a builtin already
means the same thing, the class is one too, so generic handlers keep working.
No message ever carries an app secret, a token or a password.

The tree (builtin bases in brackets; ``(internal)`` ones never reach a caller)::

    KoreaInvestmentError
    ├── ConfigurationError [ValueError]      bad arguments or variables: fix, do not retry
    │   └── UsageError                       bad kis-token input found after parsing (exit 2)
    ├── TokenError
    │   ├── TokenIssueError                  tokenP/revokeP failed (.code, .status)
    │   │   ├── TokenRateLimitedError        EGW00133 until the issue deadline
    │   │   └── InvalidCredentialsError      EGW00103/EGW00105: never retried
    │   ├── TokenWaitTimeout [TimeoutError]  a peer's issuance took longer than the wait bound
    │   ├── NoTokenError                     nothing stored (``kis-token token status/revoke``)
    │   └── LeaseLost (internal)             the lease expired mid-issuance: read and acquire again
    ├── StorageError                         the token store could not be read or written
    │   ├── StorageUnavailableError [ConnectionError]   unreachable now: ridden out, then raised
    │   ├── StoragePermissionError           the store refused a command or key (a Redis ACL): fix the ACL
    │   ├── UnreadableKeyError               a key of ours holds something else: read as no token
    │   ├── Uncoordinated (internal)         no lock file possible here: coordinate this process only
    │   └── LimiterStoreUnavailable          the rate limiter's store cannot be used: callers spend a fallback
    │                                        share; only its probes (kis-token health, limit) raise it
    ├── KISAPIError                          a REST call failed (.msg_cd, .msg1, .status)
    │   ├── RateLimitExceededError           EGW00201 after bounded retries
    │   │   └── RateLimitWaitTimeout [TimeoutError]   no slot in the budget within the wait: nothing sent
    │   ├── KISConnectionError               no connection or no answer within the timeout
    │   └── SymbolNotFoundError [ValueError] KIS answered with no data for the symbol
    ├── MasterFileError [ValueError]         a master file download or archive was refused
    │   └── MasterCacheUnavailable (internal)   no cache directory: download into memory instead
    └── UnsafePathError (internal)           a path we would use is not safe to use
        ├── UnsafeDirectory                  another user's, or writable by group or others
        ├── UnsafeLockFile                   a symlink, not a regular file, or not ours
        └── LockFileUnavailable              cannot be created here (read-only disk, ...)
"""

from __future__ import annotations


class KoreaInvestmentError(Exception):
    """Root of every error this library raises on purpose."""


class ConfigurationError(KoreaInvestmentError, ValueError):
    """Bad arguments or environment variables; fix the configuration, do not retry."""


class UsageError(ConfigurationError):
    """``kis-token``: command-line input that parsed but cannot be used (exit status 2)."""


# ---------------------------------------------------------------------------------------- tokens
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


class TokenWaitTimeout(TokenError, TimeoutError):
    """Waited for another thread, process or server to issue a token, and gave up.

    Every wait in this library is finite; this is what the end of one looks like.
    Also a builtin :class:`TimeoutError`, so generic timeout handling catches it.
    """


class NoTokenError(TokenError):
    """No token is stored for these credentials (``kis-token token status`` / ``token revoke``)."""


class LeaseLost(TokenError):
    """Internal: the issuance lease was lost mid-issuance; go back to reading and acquiring."""


# --------------------------------------------------------------------------------------- storage
class StorageError(KoreaInvestmentError):
    """The token store could not be read or written."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The token store (e.g. Redis) cannot be reached right now.

    Also a builtin :class:`ConnectionError`, as 0.6.1's unreachable-Redis error
    was, so ``except ConnectionError`` keeps catching it.
    """


class StoragePermissionError(StorageError):
    """The store refused a command or a key for lack of permission (a Redis ACL user's rules).

    Configuration, not an outage: retrying cannot help.  The message names the
    README's minimal Redis ACL, which lists every command the library sends.
    """


class UnreadableKeyError(StorageError):
    """A key under our names holds another Redis type, or bytes that do not decode.

    Not a token, so readers treat it as none and the next save replaces it,
    instead of every caller failing until an operator deletes it.
    """


class Uncoordinated(StorageError):
    """Internal: the lock file or directory cannot exist here; coordinate this process only."""


class LimiterStoreUnavailable(StorageError):
    """The rate limiter's shared store cannot be used now; callers spend a fallback share meanwhile.

    A REST call never sees it (the limiter falls back); the limiter's probes
    for ``kis-token health`` and ``kis-token limit`` raise it to say what is wrong.

    ``denied`` is True when the store refused us (an ACL, a file's permissions)
    rather than failed: ``kis-token health`` says "permission denied" then.
    """

    def __init__(self, message: str, *, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied


# ------------------------------------------------------------------------------------------ REST
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


class RateLimitWaitTimeout(RateLimitExceededError, TimeoutError):
    """The app key's per-second budget had no slot within the caller's wait; the request was not sent."""


class KISConnectionError(KISAPIError):
    """The KIS host could not be reached, or did not answer within the timeout."""


class SymbolNotFoundError(KISAPIError, ValueError):
    """KIS answered, but with no data for the symbol (a ``ValueError``, as 0.6.1 raised)."""


# ---------------------------------------------------------------------------------- master files
class MasterFileError(KoreaInvestmentError, ValueError):
    """A symbol master file could not be downloaded, or is not what KIS publishes.

    Raised for a failed download, a corrupt, oversized or path-escaping zip, a
    line that is not cp949 or a record shorter than the fixed-width layout.
    Nothing is written when it is raised.
    """


class MasterCacheUnavailable(MasterFileError):
    """Internal: the master-file cache directory cannot be used; download into memory instead."""


# ------------------------------------------------------------------------------------ file paths
class UnsafePathError(KoreaInvestmentError):
    """Internal: a path the token store or the master cache would use is not safe to use.

    The callers turn it into a :class:`StorageError` or a :class:`MasterFileError`
    that says what to fix.
    """


class UnsafeDirectory(UnsafePathError):
    """A directory we would keep tokens or caches in belongs to someone else or is writable by others."""


class UnsafeLockFile(UnsafePathError):
    """What sits at the lock file's path must not be used: a symlink, not a regular file, not ours."""


class LockFileUnavailable(UnsafePathError):
    """The lock file cannot be created here (read-only disk, missing or foreign directory)."""


__all__ = [
    "ConfigurationError",
    "InvalidCredentialsError",
    "KISAPIError",
    "KISConnectionError",
    "KoreaInvestmentError",
    "LeaseLost",
    "LimiterStoreUnavailable",
    "LockFileUnavailable",
    "MasterCacheUnavailable",
    "MasterFileError",
    "NoTokenError",
    "RateLimitExceededError",
    "RateLimitWaitTimeout",
    "StorageError",
    "StoragePermissionError",
    "StorageUnavailableError",
    "SymbolNotFoundError",
    "TokenError",
    "TokenIssueError",
    "TokenRateLimitedError",
    "TokenWaitTimeout",
    "Uncoordinated",
    "UnreadableKeyError",
    "UnsafeDirectory",
    "UnsafeLockFile",
    "UnsafePathError",
    "UsageError",
]
