"""What ``kis-token stream-status`` shows: the session owner, its age, what it holds, who wants what.

Why a module of its own: the CLI must not reach into the node's or the backends' private state;
this reads only what the owner and the holders publish in the store (never a key in full: the app
key is masked, the approval key never shown).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..token.record import mask_token
from .owner import backend_for
from .registry import SUBSCRIPTION_CAP

__all__ = ["StreamStatus", "Subscriber", "stream_status"]


@dataclass(frozen=True)
class Subscriber:
    """One process holding wants: where it runs, how many it wants, when they lapse unless renewed."""

    host: str
    pid: int
    wants: int
    lapses_in: float


@dataclass(frozen=True)
class StreamStatus:
    backend: str
    app_key: str
    owner: str | None
    owner_generation: int | None
    session_age: float | None
    held: int
    cap: int
    wanted: int
    subscriptions: tuple[str, ...]
    subscribers: tuple[Subscriber, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["subscriptions"] = list(self.subscriptions)
        data["subscribers"] = [asdict(s) for s in self.subscribers]
        return data


def stream_status(store: Any, app_key: str) -> StreamStatus:
    """The app key's shared session as the store records it."""
    backend = backend_for(store, app_key)
    state = backend.coordinator.state()
    holders = backend.wants.holders()
    wanted = {s for _, subs, _ in holders for s in subs}
    return StreamStatus(
        backend=backend.kind,
        app_key=mask_token(app_key),
        owner=None if state is None else f"{state.owner.host} pid {state.owner.pid}",
        owner_generation=None if state is None else state.generation,
        session_age=None
        if state is None or state.session_since is None
        else max(0.0, time.time() - state.session_since),
        held=0 if state is None else len(state.active),
        cap=SUBSCRIPTION_CAP,
        wanted=len(wanted),
        subscriptions=() if state is None else tuple(sorted(state.active)),
        subscribers=tuple(
            Subscriber(info.host, info.pid, len(subs), round(lapses, 1))
            for info, subs, lapses in sorted(holders, key=lambda row: (row[0].host, row[0].pid))
        ),
    )
