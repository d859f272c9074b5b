"""The host's copy of the tokens a shared (Redis) store issued: no token dies with its process.

Why: a token KIS issued must be readable by the other processes of its host as
soon as it is issued, whatever happens to Redis or to the process.  Otherwise
a leader that got its token while Redis was cut off, and then exited hard
(``os._exit``, as forked workers do), takes the only copy with it, and every
other process on the host waits out KIS's one-issuance-per-minute window.

So the leader writes each new token here *before* it saves it to Redis.  The
copy is read only when Redis cannot answer (then it is used as is), or when
Redis answers without a token (then the first process holding the lease saves
it for the fleet instead of calling tokenP).  The hot path never touches it.

It is a :class:`~.file.FileTokenStorage` file beside the default token file
(``redis.<digest of the location and prefix>.key``): the same atomic writes,
0600 files, private directory, and tombstones for tokens found dead.  It never
fails its caller: a copy that cannot be written or read is skipped, with one
warning.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..errors import StorageError, TokenWaitTimeout
from .credentials import Credentials
from .file import FileTokenStorage, default_token_path
from .lease import SaveOutcome
from .record import TokenRecord, key_id

logger = logging.getLogger(__name__)

#: How long a caller waits for the copy's write lock: it is held for one small write.
LOCK_SECONDS = 2.0


def host_copy_path(location: str, key_prefix: str) -> Path:
    """Where the tokens of the store at ``location`` under ``key_prefix`` are kept on this host."""
    digest = hashlib.sha256(f"{location}\0{key_prefix}".encode()).hexdigest()[:16]
    return default_token_path().parent / f"redis.{digest}.key"


class HostCopy:
    """Tokens kept on this host for one shared store; every method swallows its own failures."""

    def __init__(self, path: str | Path) -> None:
        self._file = FileTokenStorage(path, wait_timeout=LOCK_SECONDS)

    @property
    def path(self) -> Path:
        """The copy's file."""
        return self._file.file_path

    def __repr__(self) -> str:
        return f"HostCopy({str(self.path)!r})"

    def keep(self, record: TokenRecord) -> None:
        """Keep ``record`` unless the copy holds a token for its key that expires later, or it is dead."""
        try:
            with self._file._locked():
                held = self._file._read_file().records.get(key_id(record.api_key))
                if held is not None and (held.expires_at > record.expires_at or held == record):
                    return
                if self._file._store(record) is SaveOutcome.REFUSED:
                    logger.debug("not keeping a token that was found dead")
        except (StorageError, TokenWaitTimeout, OSError) as exc:
            self._file._warn_once("keep", "cannot keep the new token on this host (%s): %s", self.path, exc)

    def get(self, credentials: Credentials) -> TokenRecord | None:
        """The kept token for ``credentials`` (valid or not), or None."""
        try:
            return self._file._read_record(credentials)
        except (StorageError, OSError) as exc:
            self._file._warn_once("read", "cannot read the tokens kept on this host (%s): %s", self.path, exc)
            return None

    def forget(self, credentials: Credentials, access_token: str) -> None:
        """Drop ``access_token`` if it is the kept one, and remember it as dead."""
        try:
            self._file._compare_and_delete(credentials, access_token)
        except (StorageError, TokenWaitTimeout, OSError) as exc:
            self._file._warn_once("forget", "cannot drop a dead token kept on this host (%s): %s", self.path, exc)
