"""``kis-token`` (also ``python -m korea_investment_stock``): see and manage the shared token.

Commands::

    token status     what the store holds: backend, location, expiry (KST), time left, masked token
    token refresh    force one single-flight re-issue
    token revoke     revoke the stored token at KIS and remove it from the store
    token clear      remove the stored token from the store (KIS is not told)
    health           storage round trip, the REST budget's limiter, KIS host reachability
    limit            the per-second REST budget: used in the last second, per app key
    price SYMBOL     the current price of one symbol (--market KR|US)
    demo             stampede a fake KIS server and count tokenP calls

Credentials come from KOREA_INVESTMENT_API_KEY, KOREA_INVESTMENT_API_SECRET and
KOREA_INVESTMENT_ACCOUNT_NO; the store from KOREA_INVESTMENT_TOKEN_STORAGE
(file or redis) and its variables; the host from KOREA_INVESTMENT_BASE_URL,
--base-url or --mock.

Exit status: 0 success; 1 the command ran and failed (KIS refused, storage or
host unreachable, demo broke its promise); 2 bad usage or configuration;
3 no (usable) token stored, for ``token status`` and ``token revoke``;
130 interrupted.  Errors are one line on stderr (and a JSON document on stdout
with --json).  No command prints the app secret, a full token or a password.

The command line is a room of its own: it uses the client, the stores and the
transport through their public API only, and nothing in the library imports it.
"""

from __future__ import annotations

from .main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NO_TOKEN, EXIT_OK, EXIT_USAGE, build_parser, main

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_NO_TOKEN", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
