"""The parts a fleet needs to share one KIS session, as small protocols with one backend per store kind.

Why protocols: the file store (one host) and Redis (the fleet) share the wants and relay frames
with different primitives (a JSON file and a Unix socket; Lua over a hash and pub/sub), and both
elect the owner through the token store's own lease (purpose ``stream-owner``, the token issuer's
machinery: :class:`~..token.lease.HeldLease`), but the node (:mod:`.node`) runs the same rules on
top of either:

* :class:`Coordinator` - who owns the app key's session. ``held()`` is the owner's *confirmed*
  right to hold the socket; the node checks it before every connect and closes the socket at once
  when it turns false (self-fencing), so the old session is gone before anyone else may acquire.
* :class:`Wants` - the shared registry: per holder (one per process) the set of wanted
  subscriptions, capped at 41 for the union, with an expiry so a dead process's wants lapse.
* :class:`ApprovalStore` - the one approval key of the app key, shared (only the owner issues).
* :class:`RelayServer` / :class:`RelayClient` - the owner's fan-out to other processes, and a
  follower's end of it (frames in, nudges out).

:func:`backend_for` picks the backend from the client's token store: the file store and the Redis
stores share; any other store (in memory, custom) keeps the session in this process alone.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..errors import SubscriptionLimitError
from .registry import SUBSCRIPTION_CAP, Subscription

__all__ = [
    "WANTS_HEARTBEAT",
    "WANTS_TTL",
    "ApprovalStore",
    "Backend",
    "Coordinator",
    "HolderInfo",
    "LocalBackend",
    "OwnerInfo",
    "RelayClient",
    "RelayServer",
    "Wants",
    "backend_for",
    "limit_error",
    "new_holder",
]

#: A holder's wants lapse this many seconds after its last heartbeat (the stated bound for a dead process).
WANTS_TTL = 6.0
#: How often a live process renews its wants.
WANTS_HEARTBEAT = 1.5
#: The stored approval key is not reused after this long (KIS: valid 24 h).
APPROVAL_MAX_AGE = 20 * 3600.0


@dataclass(frozen=True)
class HolderInfo:
    """Who holds wants or the session: a process, named for people (``stream-status``)."""

    holder: str
    host: str
    pid: int
    since: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> HolderInfo | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["holder"]), str(data["host"]), int(data["pid"]), float(data["since"]))
        except (KeyError, TypeError, ValueError):
            return None


def new_holder() -> HolderInfo:
    """This process, with a random part (a pid is reused; two hosts may share one)."""
    host = socket.gethostname()
    pid = os.getpid()
    return HolderInfo(f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host, pid)


@dataclass(frozen=True)
class OwnerInfo:
    """The session owner as stored: the process, its fencing generation, and its session's state."""

    owner: HolderInfo
    generation: int
    session_since: float | None = None
    active: tuple[str, ...] = ()


class Coordinator(Protocol):
    """Elects the one owner of the app key's session."""

    def try_acquire(self, me: HolderInfo) -> int | None:
        """Become owner without waiting; the fencing generation, or None if another holds it."""
        ...

    def held(self) -> bool:
        """Still the owner, confirmed recently enough to keep the socket open (no I/O)."""
        ...

    def keep(self) -> None:
        """The owner's loop is alive: its lease may be renewed a while more (bounded renewal)."""
        ...

    def release(self) -> None:
        """Stop being owner (idempotent)."""
        ...

    def publish_state(self, info: OwnerInfo) -> None:
        """Record the owner's session state for ``stream-status`` (best effort)."""
        ...

    def state(self) -> OwnerInfo | None:
        """The current owner and its session state, if any."""
        ...


class Wants(Protocol):
    """The shared registry: each holder's whole set of wants, the union capped."""

    cap: int

    def put(self, holder: HolderInfo, wants: frozenset[Subscription], *, check_cap: bool = True) -> None:
        """Replace ``holder``'s wants (and renew its expiry), atomically; :class:`SubscriptionLimitError`
        (nothing changed) if the union would grow past the cap."""
        ...

    def remove(self, holder: HolderInfo) -> None: ...

    def union(self) -> dict[Subscription, frozenset[str]]:
        """Every live holder's wants (expired holders are dropped here)."""
        ...

    def holders(self) -> list[tuple[HolderInfo, frozenset[Subscription], float]]:
        """Live holders, their wants and seconds until they lapse (for ``stream-status``)."""
        ...


class ApprovalStore(Protocol):
    def read(self) -> str | None:
        """The stored approval key, if fresh enough to use."""
        ...

    def write(self, key: str) -> bool:
        """Store a key this process just issued; False (nothing written) once it no longer owns the session."""
        ...


class RelayServer(Protocol):
    """The owner's end: frames out to every follower, nudges in."""

    def start(self, on_nudge: Callable[[], None], greeting: Callable[[], str]) -> None: ...

    def publish(self, message: str) -> None:
        """Never blocks."""
        ...

    @property
    def followers(self) -> int: ...

    def close(self) -> None: ...


class RelayClient(Protocol):
    """A follower's end: messages in (``on_message``), ``on_lost`` when the owner went away."""

    def connect(self, on_message: Callable[[str], None], on_lost: Callable[[str], None]) -> bool:
        """Start receiving; False if no owner can be reached now (try again later)."""
        ...

    def nudge(self) -> None:
        """Tell the owner the wants changed."""
        ...

    @property
    def alive(self) -> bool: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """One store kind's coordinator, registry, approval store and relay, for one app key."""

    @property
    def kind(self) -> str: ...

    @property
    def coordinator(self) -> Coordinator: ...

    @property
    def wants(self) -> Wants: ...

    @property
    def approvals(self) -> ApprovalStore: ...

    @property
    def silence_bound(self) -> float | None:
        """Seconds without any relay message after which a follower calls the owner gone (None: the
        relay itself reports the loss, as a Unix socket does)."""
        ...

    def relay_server(self) -> RelayServer: ...

    def relay_client(self) -> RelayClient: ...

    def describe(self) -> str: ...


def limit_error(cap: int, adding: Iterable[Subscription], held: dict[str, int]) -> SubscriptionLimitError:
    """The cap refusal: names the cap and what holds the slots (subscription and holder count)."""
    adding = sorted(set(adding))
    shown = ", ".join(f"{s} ({n} holder{'s' if n != 1 else ''})" for s, n in sorted(held.items()))
    return SubscriptionLimitError(
        f"subscribing to {', '.join(map(str, adding))} would pass KIS's cap of {cap} subscriptions per app key "
        f"(every kind, every process sharing the store): {len(held)} held. Release some first. Held: {shown}",
        cap=cap,
        held=tuple(sorted(held)),
    )


# ---------------------------------------------------------------------------- in-process only
class _LocalCoordinator:
    def __init__(self) -> None:
        self._owner: HolderInfo | None = None
        self._state: OwnerInfo | None = None
        self._generation = 0
        self._lock = threading.Lock()

    def try_acquire(self, me: HolderInfo) -> int | None:
        with self._lock:
            if self._owner is not None and self._owner.holder != me.holder:
                return None
            self._owner = me
            self._generation += 1
            return self._generation

    def held(self) -> bool:
        return self._owner is not None

    def keep(self) -> None:
        return None

    def release(self) -> None:
        with self._lock:
            self._owner = None

    def publish_state(self, info: OwnerInfo) -> None:
        self._state = info

    def state(self) -> OwnerInfo | None:
        return self._state if self._owner is not None else None


class _LocalWants:
    def __init__(self, cap: int = SUBSCRIPTION_CAP) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._holders: dict[str, tuple[HolderInfo, frozenset[Subscription]]] = {}

    def put(self, holder: HolderInfo, wants: frozenset[Subscription], *, check_cap: bool = True) -> None:
        with self._lock:
            others = {s for h, (_, w) in self._holders.items() if h != holder.holder for s in w}
            before = others | (self._holders.get(holder.holder, (holder, frozenset()))[1])
            after = others | wants
            if check_cap and len(after) > self.cap and len(after) > len(before):
                raise limit_error(self.cap, wants - before, _counts(self._holders.values()))
            if wants:
                self._holders[holder.holder] = (holder, wants)
            else:
                self._holders.pop(holder.holder, None)

    def remove(self, holder: HolderInfo) -> None:
        with self._lock:
            self._holders.pop(holder.holder, None)

    def union(self) -> dict[Subscription, frozenset[str]]:
        with self._lock:
            found: dict[Subscription, set[str]] = {}
            for name, (_, wants) in self._holders.items():
                for s in wants:
                    found.setdefault(s, set()).add(name)
            return {s: frozenset(h) for s, h in found.items()}

    def holders(self) -> list[tuple[HolderInfo, frozenset[Subscription], float]]:
        with self._lock:
            return [(info, wants, float("inf")) for info, wants in self._holders.values()]


def _counts(entries: Iterable[tuple[HolderInfo, frozenset[Subscription]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, wants in entries:
        for s in wants:
            counts[str(s)] = counts.get(str(s), 0) + 1
    return counts


class _LocalApprovals:
    def __init__(self) -> None:
        self._key: tuple[str, float] | None = None

    def read(self) -> str | None:
        key = self._key
        return key[0] if key is not None and time.time() - key[1] < APPROVAL_MAX_AGE else None

    def write(self, key: str) -> bool:
        self._key = (key, time.time())
        return True


class _NoRelay:
    def start(self, on_nudge: Callable[[], None], greeting: Callable[[], str]) -> None:
        return None

    def publish(self, message: str) -> None:
        return None

    @property
    def followers(self) -> int:
        return 0

    def close(self) -> None:
        return None


class LocalBackend:
    """A store that cannot be shared (memory, custom): the session is this process's alone."""

    kind = "local"
    silence_bound: float | None = None

    def __init__(self) -> None:
        self.coordinator = _LocalCoordinator()
        self.wants = _LocalWants()
        self.approvals = _LocalApprovals()

    def relay_server(self) -> RelayServer:
        return _NoRelay()

    def relay_client(self) -> RelayClient:
        raise RuntimeError("an in-process session has no relay")  # never asked: this process always owns

    def describe(self) -> str:
        return "this process only (the token store is not shared)"


def backend_for(store: Any, app_key: str) -> Backend:
    """The coordination backend that matches ``store``: file, Redis, or this process alone."""
    from ..token.file import FileTokenStorage
    from ..token.redis import RedisTokenStorage

    if isinstance(store, FileTokenStorage):
        from .coord_file import FileBackend

        return FileBackend(store, app_key)
    if isinstance(store, RedisTokenStorage):
        from .coord_redis import RedisBackend

        return RedisBackend(store, app_key)
    return LocalBackend()
