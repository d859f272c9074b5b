"""The token operations behind ``kis-token token …``: refresh, revoke and clear, without argparse.

Status, description and health come from the store itself
(:meth:`~..token.storage.TokenStorage.status` and friends); what is left here
is what a tool adds on top: reporting a refresh, and revoking at KIS before
forgetting.  Nothing here returns or logs a secret or a full token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import NoTokenError, StorageError, TokenIssueError
from ..token.credentials import Credentials
from ..token.issuer import TokenIssuer
from ..token.record import mask_token
from ..token.storage import TokenStorage
from ..transport import DEAD_TOKEN_CODES


@dataclass(frozen=True)
class RefreshResult:
    """``previous`` and ``token`` are masked; ``same_token`` when KIS answered the token it had."""

    previous: str | None
    token: str
    expires_kst: str
    seconds_left: int
    same_token: bool
    issued_by_peer: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields, for ``--json`` output."""
        return asdict(self)


def refresh_token(storage: TokenStorage, credentials: Credentials, issuer: TokenIssuer) -> RefreshResult:
    """Force one re-issue through the store's single flight (:meth:`TokenStorage.refresh`), reported masked.

    The token stored now is the one replaced: if a peer stores a different
    valid token meanwhile, that is the refresh, and KIS is not called again.
    Raises :class:`StorageError` when KIS issued a token that the store then
    failed to keep (a command-line process ends; its memory is no place for it).
    """
    before = storage.stored_record(credentials.api_key, credentials.secret())
    outcome = storage.refresh(credentials, issuer.issue, replacing=before.access_token if before else None)
    record = outcome.record
    if outcome.issued_here:
        stored = storage.stored_record(credentials.api_key, credentials.secret())
        if stored is None or stored.access_token != record.access_token:
            raise StorageError(
                f"KIS issued a token (expires {record.expired_text} KST) but the store could not save it; "
                "check the storage with `health`"
            )
    return RefreshResult(
        previous=mask_token(before.access_token) if before is not None else None,
        token=mask_token(record.access_token),
        expires_kst=record.expired_text,
        seconds_left=int(record.seconds_left()),
        same_token=before is not None and before.access_token == record.access_token,
        issued_by_peer=not outcome.issued_here,
    )


@dataclass(frozen=True)
class RevokeResult:
    """``already_dead`` when KIS no longer knew the token; ``removed`` when the store dropped it."""

    token: str
    already_dead: bool
    removed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The fields, for ``--json`` output."""
        return asdict(self)


def revoke_token(storage: TokenStorage, credentials: Credentials, issuer: TokenIssuer) -> RevokeResult:
    """Revoke the stored token at KIS, then delete it from the store if it is still stored.

    A token KIS already treats as dead (``EGW00121``/``EGW00123``) is removed
    all the same.  Any other failure leaves the store untouched and raises.
    Raises :class:`NoTokenError` when nothing is stored.
    """
    record = storage.stored_record(credentials.api_key, credentials.secret())
    if record is None:
        raise NoTokenError("no token is stored for this app key and secret; nothing to revoke")
    already_dead = False
    try:
        answer = issuer.revoke(record.access_token)
        message = str(answer.get("message") or "revoked")
    except TokenIssueError as exc:
        if exc.code not in DEAD_TOKEN_CODES:
            raise
        already_dead = True
        message = f"KIS no longer accepts this token ({exc.code}); removing it from the store"
    removed = storage.invalidate_token(credentials.api_key, credentials.secret(), record.access_token)
    return RevokeResult(mask_token(record.access_token), already_dead, removed, message)
