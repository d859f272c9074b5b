"""Choose a token store from environment variables, so deployments switch with no code change."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from ..errors import ConfigurationError
from ..notices import warn_once
from .file import FileTokenStorage
from .redis_connect import ENV_REDIS_URL
from .storage import TokenStorage

logger = logging.getLogger(__name__)

ENV_STORAGE = "KOREA_INVESTMENT_TOKEN_STORAGE"
STORAGE_CHOICES = ("file", "redis")


def storage_from_env(environ: Mapping[str, str] | None = None, *, ping: bool | None = None) -> TokenStorage:
    """Build the store named by ``KOREA_INVESTMENT_TOKEN_STORAGE`` (default ``file``).

    ``file`` gives a :class:`FileTokenStorage` (``KOREA_INVESTMENT_TOKEN_FILE``);
    ``redis`` gives a ``LockingRedisTokenStorage`` (``KOREA_INVESTMENT_REDIS_URL``,
    ``KOREA_INVESTMENT_REDIS_PASSWORD``), which connects on first use unless ``ping=True``.

    A ``KOREA_INVESTMENT_REDIS_URL`` with the file store is read by nothing: that
    is logged once, since a fleet that meant to share Redis would otherwise issue
    one token per host without a word.
    """
    env = os.environ if environ is None else environ
    kind = (env.get(ENV_STORAGE) or "file").strip().lower()
    if kind == "file":
        storage = FileTokenStorage()
        if (env.get(ENV_REDIS_URL) or "").strip():
            warn_once(
                logger,
                ("redis url unused", str(storage.file_path)),
                "%s is set but the token store is the file %s: %s is not 'redis', so the Redis URL is not used. "
                "Set %s=redis to share tokens through Redis, or unset %s",
                ENV_REDIS_URL,
                storage.file_path,
                ENV_STORAGE,
                ENV_STORAGE,
                ENV_REDIS_URL,
            )
        return storage
    if kind == "redis":
        from .redis import LockingRedisTokenStorage

        return LockingRedisTokenStorage.from_env(env, ping=ping)
    raise ConfigurationError(
        f"{ENV_STORAGE}={kind!r} is not a token storage; choose one of: {', '.join(STORAGE_CHOICES)}"
    )
