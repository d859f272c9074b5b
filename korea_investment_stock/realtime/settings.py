"""Where the WebSocket is and whose notices to ask for: arguments, then variables, then defaults.

Why here: phase 2 adds ``ws_url=`` and ``hts_id=`` to ``KoreaInvestment`` (the issue's contract);
the resolution rules live beside the realtime code so the client only passes its arguments on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import ConfigurationError

__all__ = ["ENV_HTS_ID", "ENV_WS_URL", "MOCK_WS_URL", "REAL_WS_URL", "resolve_hts_id", "resolve_ws_url"]

REAL_WS_URL = "ws://ops.koreainvestment.com:21000"
MOCK_WS_URL = "ws://ops.koreainvestment.com:31000"
ENV_WS_URL = "KOREA_INVESTMENT_WS_URL"
ENV_HTS_ID = "KOREA_INVESTMENT_HTS_ID"


def resolve_ws_url(ws_url: str | None = None, *, mock: bool = False, environ: Mapping[str, str] | None = None) -> str:
    """``ws_url``, else ``KOREA_INVESTMENT_WS_URL``, else KIS's real or mock address."""
    env = os.environ if environ is None else environ
    url = ws_url or env.get(ENV_WS_URL) or (MOCK_WS_URL if mock else REAL_WS_URL)
    if not url.startswith(("ws://", "wss://")):
        raise ConfigurationError(
            f"the WebSocket URL must start with ws:// or wss://, got {url!r} (ws_url= or {ENV_WS_URL})"
        )
    return url


def resolve_hts_id(hts_id: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """``hts_id``, else ``KOREA_INVESTMENT_HTS_ID``, else None (notices then cannot be asked for)."""
    env = os.environ if environ is None else environ
    value = hts_id or env.get(ENV_HTS_ID) or None
    return value.strip() if value else None
