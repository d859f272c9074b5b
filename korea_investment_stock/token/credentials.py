"""An app key and its secret as one value, so the bare secret never sits in a frame's locals.

Error reporters that capture a traceback's local variables (Sentry does by
default) would otherwise ship the app secret from every function that took it
as a ``str`` argument.  :class:`Credentials` keeps it behind a method and
shows only the app key's ends and the fingerprint in ``repr``; functions that
receive a bare secret from a 0.6.x signature wrap it at once and ``del`` the
argument.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

from ..errors import ConfigurationError
from .record import credential_fingerprint, mask_token


class Credentials:
    """An app key, its app secret and their keyed fingerprint (:func:`~.record.credential_fingerprint`).

    Two values are equal when key and fingerprint are, so they can key a flight
    or a cache without the secret being compared or hashed in the clear.
    """

    __slots__ = ("_secret", "api_key", "fingerprint")

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._secret = api_secret
        del api_secret  # from here on only the attribute holds it
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("api_key must be a non-empty string")
        if not isinstance(self._secret, str) or not self._secret.strip():
            raise ConfigurationError("api_secret must be a non-empty string")
        self.api_key = api_key
        self.fingerprint = credential_fingerprint(api_key, self._secret)

    def refuse_whitespace(self) -> None:
        """:class:`ConfigurationError` if the key or secret has whitespace in it (a pasted newline or space).

        KIS keys and secrets never contain any: KIS would answer "invalid
        AppKey" (``EGW00103``) or "invalid AppSecret" (``EGW00105``) and hide the
        real cause.  The message names which one; it never shows the secret.
        Only the client checks, before it calls KIS: the stores take keys as
        given (0.6.1's ``load_token`` never refused one).
        """
        for name, value, variable in (
            ("api_key", self.api_key, "KOREA_INVESTMENT_API_KEY"),
            ("api_secret", self._secret, "KOREA_INVESTMENT_API_SECRET"),
        ):
            if any(character.isspace() for character in value):
                where = "at its start or end" if value != value.strip() else "inside it"
                raise ConfigurationError(
                    f"{name} has whitespace {where} (a pasted newline or space?); KIS keys and secrets have none, "
                    f"and KIS would reject it as invalid. Remove it where {name} comes from "
                    f"(e.g. {variable} or a secrets file)"
                )

    def secret(self) -> str:
        """The bare app secret: pass it on inline, never keep it in a local variable."""
        return self._secret

    def __repr__(self) -> str:
        return f"Credentials(api_key='{mask_token(self.api_key)}', fingerprint='{self.fingerprint[:12]}')"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return self.api_key == other.api_key and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash((self.api_key, self.fingerprint))

    def sealed_json(self, fields: Mapping[str, str], secret_field: str) -> SealedBody:
        """A JSON request body with the secret under ``secret_field``, opaque to ``repr``."""
        return SealedBody(json.dumps({**fields, secret_field: self._secret}).encode("utf-8"))


class SealedBody(io.BytesIO):
    """A request body that ``requests`` can send, whose ``repr`` shows no content.

    Tracebacks and error reporters show the frames' locals by ``repr``; a plain
    ``dict`` or ``bytes`` body would show the app secret in them.
    """

    def __repr__(self) -> str:
        return f"<SealedBody {len(self.getbuffer())} bytes>"


__all__ = ["Credentials", "SealedBody"]
