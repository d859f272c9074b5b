"""Keeping secrets out of text: one place for masking URLs and scrubbing messages.

The Redis stores, the error translation and the command line all print
locations and messages that could carry a password; they all use these, so a
rule fixed here is fixed everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

#: What a hidden value is shown as.
REDACTED = "***"
#: Query parameters of a URL that name or authenticate a user.
_SECRET_QUERY_KEYS = frozenset({"password", "username", "user"})


def userinfo(username: str | None, has_password: bool) -> str:
    """The ``user:***@`` part of a shown URL: the password hidden, the user kept."""
    if has_password:
        return f"{username or ''}:{REDACTED}@"
    return f"{username}@" if username else ""


def redact_url(url: str, *, has_password: bool = False) -> str:
    """``url`` with its password, its user and any ``password=`` hidden: ``redis://:***@host:port/db``.

    ``has_password`` marks a password given elsewhere (an argument or
    ``KOREA_INVESTMENT_REDIS_PASSWORD``).  A URL that does not parse is not echoed at all.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    hidden = has_password or parts.password is not None or parts.username is not None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    netloc = userinfo(None, hidden) + netloc
    query = urlencode([(k, REDACTED if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries (its password, raw and unquoted, and any ``password=``), to scrub."""
    try:
        parts = urlsplit(url)
        password = parts.password
        query = parse_qsl(parts.query)
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    found += [value for key, value in query if key == "password"]
    return [s for s in found if s]


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***``, the longest first.

    Longest first, so a secret that contains another is hidden whole.
    """
    for secret in sorted({s.strip() for s in secrets if s and s.strip()}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
