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
    │   ├── KISConnectionError               no connection or no answer within the timeout (.cause,
    │   │                                    .request_sent: False only when it provably never left)
    │   ├── MalformedResponseError           KIS's answer was not a JSON object
    │   ├── SymbolNotFoundError [ValueError] KIS answered with no data for the symbol
    │   ├── OrderRejectedError               KIS refused an order or account request (.msg_cd, .msg1)
    │   │   ├── InsufficientCashError        not enough orderable cash (APBK0919)
    │   │   ├── InsufficientQuantityError    not enough sellable quantity (APBK1234)
    │   │   ├── MarketClosedError            outside the market's hours
    │   │   ├── UnknownSymbolError           no such product to order
    │   │   ├── NothingToReviseError         nothing left to revise or cancel
    │   │   ├── AccountMismatchError         the key is bound to another account (IGW00002)
    │   │   └── WrongEnvironmentError        a real key/id on mock or the reverse (EGW00213, EGW02004)
    │   └── PagingError                      a paged query did not end within its page or time bound
    ├── OrderStatusUnknown                   an order may or may not be live: reconcile_order() settles it
    │   └── AmbiguousOrderError              reconciliation found several orders that could be this one
    ├── TradingUnsupportedError [ValueError] no such operation for this market or environment
    ├── RealtimeError                        the real-time WebSocket (issue 19)
    │   ├── SubscriptionLimitError           past the 41 subscriptions of an app key (.cap, .held)
    │   ├── SubscriptionRefusedError         KIS refused a subscribe or unsubscribe (.msg_cd, .msg1)
    │   ├── SessionInUseError                OPSP8996: another session holds the app key's socket
    │   ├── ApprovalKeyError                 no usable approval key (refused, or stale again)
    │   └── RealtimeTimeoutError [TimeoutError]   no connection or answer within the timeout
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
    minimal Redis ACL (docs/token-stores.md), which lists every command the library sends.
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
    """The KIS host could not be reached, or did not answer within the timeout.

    ``cause`` names the failure (``dns``, ``refused``, ``no route``, ``connect timeout``, ``tls``,
    ``read timeout``, ``reset``, ``deadline``, ``other``).  ``request_sent`` is
    ``False`` only when the request provably never left this machine (no
    connection was made, or no byte of the request was written); otherwise KIS
    may have received it, which matters for orders.
    """

    def __init__(
        self,
        message: str,
        *,
        msg_cd: str | None = None,
        msg1: str | None = None,
        status: int | None = None,
        cause: str = "other",
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, msg_cd=msg_cd, msg1=msg1, status=status)
        self.cause = cause
        self.request_sent = request_sent


class SymbolNotFoundError(KISAPIError, ValueError):
    """KIS answered, but with no data for the symbol (a ``ValueError``, as 0.6.1 raised)."""


class MalformedResponseError(KISAPIError):
    """KIS (or something in between) answered with a body that is not a JSON object.

    For an order this means the order may be live: see :class:`OrderStatusUnknown`.
    """


# --------------------------------------------------------------------------------------- trading
class OrderRejectedError(KISAPIError):
    """KIS answered an order or account request with a refusal (``rt_cd`` not ``"0"``).

    KIS did process the request and said no, so nothing is live and retrying
    the same request gets the same answer until the cause is fixed.  The
    subclasses name the causes a program can act on; ``msg_cd``/``msg1`` are
    KIS's own code and text.
    """


class InsufficientCashError(OrderRejectedError):
    """Not enough orderable cash for the buy (``APBK0919``): check :meth:`fetch_buyable` first."""


class InsufficientQuantityError(OrderRejectedError):
    """Not enough sellable quantity for the sell (``APBK1234``): check :meth:`fetch_balance`."""


class MarketClosedError(OrderRejectedError):
    """The market does not take this order now (outside its hours)."""


class UnknownSymbolError(OrderRejectedError, ValueError):
    """KIS knows no product by this symbol on this market."""


class NothingToReviseError(OrderRejectedError):
    """The order has nothing left to revise or cancel (filled, cancelled, or already revised)."""


class AccountMismatchError(OrderRejectedError):
    """The app key is bound to another account (``IGW00002``): one app key and token per account."""


class WrongEnvironmentError(OrderRejectedError):
    """A real key or tr_id on the mock host, or the reverse (``EGW00213``, ``EGW02004``)."""


class PagingError(KISAPIError):
    """A paged query did not reach its last page within its page bound or its time bound."""


class OrderStatusUnknown(KoreaInvestmentError):
    """An order request failed in a way that leaves it unknown whether KIS took it.

    The request may have reached KIS: the answer timed out, the connection
    broke after sending, or the answer was a 5xx or a body without KIS's
    envelope.  It is never sent again automatically.  Pass this error to
    :meth:`KoreaInvestment.reconcile_order`, which looks the order up among
    today's orders: it returns the :class:`~.trading.Order` when KIS has it,
    and ``None`` when it was not placed.

    ``intent`` is what was asked (a :class:`~.trading.OrderIntent`), ``cause``
    the failure in words, and ``started_at``/``ended_at`` (epoch seconds) the
    attempt's span, which reconciliation matches order times against.
    """

    def __init__(self, message: str, *, intent: object, cause: str, started_at: float, ended_at: float) -> None:
        super().__init__(message)
        self.intent = intent
        self.cause = cause
        self.started_at = started_at
        self.ended_at = ended_at


class AmbiguousOrderError(OrderStatusUnknown):
    """Reconciliation found more than one of today's orders that could be this one.

    Two identical orders (symbol, side, quantity, price) placed in the same
    seconds cannot be told apart: KIS has no client order id.  ``candidates``
    holds the matching orders; give concurrent orders distinct quantities or
    prices, or reconcile them together.
    """

    def __init__(self, message: str, *, unknown: OrderStatusUnknown, candidates: list[object]) -> None:
        super().__init__(
            message,
            intent=unknown.intent,
            cause=unknown.cause,
            started_at=unknown.started_at,
            ended_at=unknown.ended_at,
        )
        self.candidates = candidates


class TradingUnsupportedError(KoreaInvestmentError, ValueError):
    """KIS offers no such operation for this market or environment (e.g. a market order overseas)."""


# ------------------------------------------------------------------------------------- real-time
class RealtimeError(KoreaInvestmentError):
    """The real-time WebSocket failed; the subclasses say how."""


class SubscriptionLimitError(RealtimeError):
    """Subscribing would pass the app key's subscription cap (41, every kind together).

    ``cap`` is the cap and ``held`` names what holds the slots (``"trades:005930"``...). Raised by
    our registry *before* anything is sent, or after KIS answered ``OPSP0008``; either way the
    session is not disturbed. Release a subscription first.
    """

    def __init__(self, message: str, *, cap: int, held: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.cap = cap
        self.held = held


class SubscriptionRefusedError(RealtimeError):
    """KIS answered a subscribe or unsubscribe frame with a refusal (``msg_cd``/``msg1`` verbatim)."""

    def __init__(self, message: str, *, msg_cd: str, msg1: str) -> None:
        super().__init__(message)
        self.msg_cd = msg_cd
        self.msg1 = msg1


class SessionInUseError(RealtimeError):
    """KIS refused the session with ``OPSP8996``: another socket already holds this app key.

    Retrying only repeats the refusal (and loops get app keys blocked): one session per app key
    must be shared, not raced for.
    """


class ApprovalKeyError(RealtimeError):
    """No usable WebSocket approval key: the Approval call failed, or a fresh key was refused too."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RealtimeTimeoutError(RealtimeError, TimeoutError):
    """The WebSocket did not connect, or KIS did not answer a frame, within the timeout."""


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
    "AccountMismatchError",
    "AmbiguousOrderError",
    "ApprovalKeyError",
    "ConfigurationError",
    "InsufficientCashError",
    "InsufficientQuantityError",
    "InvalidCredentialsError",
    "KISAPIError",
    "KISConnectionError",
    "KoreaInvestmentError",
    "LeaseLost",
    "LimiterStoreUnavailable",
    "LockFileUnavailable",
    "MalformedResponseError",
    "MarketClosedError",
    "MasterCacheUnavailable",
    "MasterFileError",
    "NoTokenError",
    "NothingToReviseError",
    "OrderRejectedError",
    "OrderStatusUnknown",
    "PagingError",
    "RateLimitExceededError",
    "RateLimitWaitTimeout",
    "RealtimeError",
    "RealtimeTimeoutError",
    "SessionInUseError",
    "StorageError",
    "StoragePermissionError",
    "StorageUnavailableError",
    "SubscriptionLimitError",
    "SubscriptionRefusedError",
    "SymbolNotFoundError",
    "TokenError",
    "TokenIssueError",
    "TokenRateLimitedError",
    "TokenWaitTimeout",
    "TradingUnsupportedError",
    "Uncoordinated",
    "UnknownSymbolError",
    "UnreadableKeyError",
    "UnsafeDirectory",
    "UnsafeLockFile",
    "UnsafePathError",
    "UsageError",
    "WrongEnvironmentError",
]
