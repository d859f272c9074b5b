"""Choose a token store from environment variables, so deployments switch with no code change."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import ConfigurationError
from .file import FileTokenStorage
from .storage import TokenStorage

ENV_STORAGE = "KOREA_INVESTMENT_TOKEN_STORAGE"
STORAGE_CHOICES = ("file", "redis")


def storage_from_env(environ: Mapping[str, str] | None = None, *, ping: bool | None = None) -> TokenStorage:
    """Build the store named by ``KOREA_INVESTMENT_TOKEN_STORAGE`` (default ``file``).

    ``file`` gives a :class:`FileTokenStorage` (``KOREA_INVESTMENT_TOKEN_FILE``);
    ``redis`` gives a ``LockingRedisTokenStorage`` (``KOREA_INVESTMENT_REDIS_URL``,
    ``KOREA_INVESTMENT_REDIS_PASSWORD``), which connects on first use unless ``ping=True``.
    """
    env = os.environ if environ is None else environ
    kind = (env.get(ENV_STORAGE) or "file").strip().lower()
    if kind == "file":
        return FileTokenStorage()
    if kind == "redis":
        from .redis import LockingRedisTokenStorage

        return LockingRedisTokenStorage.from_env(env, ping=ping)
    raise ConfigurationError(
        f"{ENV_STORAGE}={kind!r} is not a token storage; choose one of: {', '.join(STORAGE_CHOICES)}"
    )
