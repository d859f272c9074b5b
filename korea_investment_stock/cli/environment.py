"""What the command line reads from the environment: the app credentials, the store, the host.

Applications and ``kis-token`` agree on the same variables, so an operator
pointing the tool at a fleet's store sees exactly what the fleet sees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigurationError, UsageError
from ..redaction import url_secrets
from ..token.credentials import Credentials
from ..token.factory import ENV_STORAGE, storage_from_env
from ..token.redis_connect import ENV_REDIS_KEY_PREFIX, ENV_REDIS_PASSWORD, ENV_REDIS_URL
from ..token.storage import TokenStorage

ENV_API_KEY = "KOREA_INVESTMENT_API_KEY"
ENV_API_SECRET = "KOREA_INVESTMENT_API_SECRET"
ENV_ACCOUNT_NO = "KOREA_INVESTMENT_ACCOUNT_NO"

#: Quotations need no account; the client still wants one, so this stands in.
PLACEHOLDER_ACCOUNT = "00000000-01"


@dataclass(frozen=True)
class EnvironmentCredentials:
    """The app key, its secret (``""`` when not needed) and the account, as the environment gives them."""

    api_key: str
    api_secret: str = field(repr=False)
    acc_no: str | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, need_secret: bool = True, need_account: bool = False
    ) -> EnvironmentCredentials:
        """Read ``KOREA_INVESTMENT_API_KEY`` / ``_API_SECRET`` / ``_ACCOUNT_NO``.

        Raises :class:`ConfigurationError` naming every missing variable.
        """
        env = os.environ if environ is None else environ
        api_key = (env.get(ENV_API_KEY) or "").strip()
        api_secret = (env.get(ENV_API_SECRET) or "").strip()
        acc_no = (env.get(ENV_ACCOUNT_NO) or "").strip() or None
        missing = [ENV_API_KEY] if not api_key else []
        if need_secret and not api_secret:
            missing.append(ENV_API_SECRET)
        if need_account and not acc_no:
            missing.append(ENV_ACCOUNT_NO)
        if missing:
            raise ConfigurationError(f"set {', '.join(missing)} (the KIS app credentials for this environment)")
        return cls(api_key, api_secret, acc_no)

    @property
    def credentials(self) -> Credentials:
        """The library's :class:`~..token.credentials.Credentials` (needs the secret)."""
        return Credentials(self.api_key, self.api_secret)


def known_secrets(environ: Mapping[str, str]) -> list[str]:
    """Every secret the environment holds, for scrubbing output: app secret, Redis password, URL password."""
    found = [environ.get(ENV_API_SECRET, ""), environ.get(ENV_REDIS_PASSWORD, "")]
    found += url_secrets(environ.get(ENV_REDIS_URL, ""))
    return [s.strip() for s in found if s and s.strip()]


def storage_for(key_prefix: str | None, environ: Mapping[str, str] | None = None) -> TokenStorage:
    """The store from the usual variables; ``key_prefix`` overrides ``KOREA_INVESTMENT_REDIS_KEY_PREFIX``."""
    env: dict[str, str] = dict(os.environ if environ is None else environ)
    try:
        if key_prefix is not None:
            if (env.get(ENV_STORAGE) or "file").strip().lower() != "redis":
                raise UsageError(f"--key-prefix applies to the redis storage only (set {ENV_STORAGE}=redis)")
            env[ENV_REDIS_KEY_PREFIX] = key_prefix
        # No PING at construction: the commands report an unreachable store themselves (health, status).
        return storage_from_env(env, ping=False)
    except ImportError as exc:
        raise ConfigurationError(
            f"the redis token storage needs the redis package ({exc.name}): pip install 'redis>=4.5.0' "
            "into this environment"
        ) from None
