"""This process's member of the app key's real-time fleet: owner of the one session, or a follower.

Why one node per process and app key: KIS allows one WebSocket session per app key, so every
stream of every process sharing the token store must be served by one socket. Each process runs
one node; the nodes elect an owner through the token store's lease (purpose ``stream-owner``, the
token issuer's machinery; :mod:`.owner`, :mod:`.coord_file`, :mod:`.coord_redis`). The owner's
node holds the phase-1 :class:`~.session.Session`, hands events to its own streams in memory and
relays every frame to the followers; a follower's node parses the relayed frames and hands the
events to its streams. Both implement the streams' :class:`~.stream.Feed`, so a stream cannot tell
which one serves it.

The rules the node keeps:

* **Wants are shared.** A stream's ``subscribe`` puts this process's whole set of wants in the
  shared registry (atomic, capped at 41 for the union; a refusal changes nothing), nudges the owner,
  and returns once the owner confirms KIS accepted them (bounded by ``ack_timeout``).
* **The owner reconciles** KIS's subscriptions with the union, on every nudge and every
  :data:`RECONCILE_INTERVAL`, so a dead process's wants (expired after :data:`~.owner.WANTS_TTL`)
  are unsubscribed.
* **Never two sockets.** A new owner waits :data:`TAKEOVER_GRACE` before connecting (KIS frees a
  dead session's key with a lag); OPSP8996 on takeover means "the old session is still releasing"
  (or a stopped owner's socket is still open at KIS): the socket is closed before another is
  opened, and the owner backs off (jittered, at most :data:`OPENS_PER_MINUTE` sockets a minute) and
  tries again. ``held()`` is asked before every connect, and a watchdog closes the socket the moment
  it turns false (self-fencing). Only a holder of the lease issues an approval key (each issuance
  kills the previous key) or relays anything, so an owner that wakes from a pause past its lease
  neither disturbs its successor's session nor feeds stale frames to the followers.
* **Failover is a Gap.** When the owner goes away, every stream of every surviving process gets
  one :class:`~.events.Gap` from the last frame seen to the moment the new owner's session is back,
  then events again.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ..errors import (
    RealtimeError,
    RealtimeTimeoutError,
    SessionInUseError,
    SubscriptionLimitError,
    SubscriptionRefusedError,
)
from . import frames
from .backoff import Backoff, ReconnectBudget
from .events import Event, Gap, kst_now
from .hub import holders_of
from .owner import WANTS_HEARTBEAT, Backend, OwnerInfo, RelayClient, RelayServer, new_holder
from .registry import SUBSCRIPTION_CAP, Subscription, SubscriptionRegistry
from .relay import control, decode, events_of, gap_message, parse_gap, subscription_of
from .session import Session
from .stream import DEFAULT_QUEUE_SIZE, Stream

__all__ = [
    "ELECTION_POLL",
    "OPENS_PER_MINUTE",
    "RECONCILE_INTERVAL",
    "TAKEOVER_GRACE",
    "Node",
    "close_nodes",
    "node_for",
]

_log = logging.getLogger(__name__)

#: How often a follower tries to become owner (non-blocking) or to reach the owner's relay.
ELECTION_POLL = 0.2
#: A new owner waits this long before connecting: KIS frees a dead session's app key with a lag.
TAKEOVER_GRACE = 0.3
#: The owner reconciles KIS's subscriptions with the shared wants at least this often (and publishes
#: its state, which followers on Redis also take as the owner's heartbeat).
RECONCILE_INTERVAL = 0.5
#: The owner's watchdog checks its lease this often and closes the socket once it is gone.
FENCE_CHECK = 0.05
#: How often the owner records its session's state for ``stream-status``.
STATUS_INTERVAL = 3.0
#: At most this many new sockets a minute from one owner (KIS may block an app key for connect loops),
#: however often OPSP8996 sends it back.
OPENS_PER_MINUTE = 12
#: How long ``subscribe`` waits for the owner's confirmation by default (covers one failover).
DEFAULT_ACK_TIMEOUT = 10.0

_TR_KINDS = {frames.TRADE_TR_ID: "trades", frames.ORDERBOOK_TR_ID: "orderbooks"}


def _subscription(tr_id: str, key: str) -> Subscription:
    kind = _TR_KINDS.get(tr_id, "notices")
    return Subscription(kind, key)  # type: ignore[arg-type]


class Node:
    """One process's end of one app key's shared session (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        url: str,
        issue_approval: Callable[[], str],
        *,
        mock: bool = False,
        hts_id: str | None = None,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        grace: float = TAKEOVER_GRACE,
        **session_options: Any,
    ) -> None:
        self.backend = backend
        self.url = url
        self.mock = mock
        self.hts_id = hts_id
        self.ack_timeout = ack_timeout
        self.grace = grace
        self.me = new_holder()
        self._issue_approval = issue_approval
        self._session_options = session_options
        self._local = SubscriptionRegistry(cap=1 << 30)  # per stream; the shared cap is the backend's
        self._streams: dict[str, Stream] = {}
        self._streams_lock = threading.Lock()
        self._wants_lock = threading.Lock()
        self._approval_lock = threading.Lock()
        self._cond = threading.Condition()
        self._active: frozenset[Subscription] = frozenset()
        self._refused: dict[Subscription, tuple[str, str]] = {}
        self._lost_since: datetime | None = None
        self._lost_reason = ""
        self._last_message: datetime | None = None
        self._closing = threading.Event()
        self._nudge = threading.Event()
        self._client: RelayClient | None = None
        self._server: RelayServer | None = None
        self._session: Session | None = None
        self._session_since: float | None = None
        self._generation = 0
        self._owner_generation: int | None = None
        self._ready = False
        self._opens = ReconnectBudget(OPENS_PER_MINUTE)
        self.stats = {"owned": 0, "gaps": 0, "opsp8996": 0, "relayed": 0}
        self._threads = [
            threading.Thread(target=self._run, name="kis-rt-node", daemon=True),
            threading.Thread(target=self._heartbeat, name="kis-rt-wants", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def __repr__(self) -> str:
        role = "owner" if self.is_owner else "follower"
        return f"Node({self.backend.kind}, {role}, streams={len(self._streams)})"

    @property
    def is_owner(self) -> bool:
        return self._server is not None

    # -- streams (the Feed) ----------------------------------------------------------------

    def stream(self, *, maxsize: int = DEFAULT_QUEUE_SIZE, hts_id: str | None = None) -> Stream:
        """A new consumer stream served by this app key's one session."""
        if self._closing.is_set():
            raise RealtimeError("the real-time node is closed")
        stream = Stream(self, maxsize=maxsize, hts_id=hts_id or self.hts_id)
        with self._streams_lock:
            self._streams[stream.id] = stream
        return stream

    def _mine(self) -> frozenset[Subscription]:
        return frozenset(self._local.held())

    def subscribe(self, stream: Stream, subscriptions: list[Subscription], timeout: float | None) -> None:
        """Share the wants (cap checked atomically), nudge the owner, wait for its confirmation."""
        wanted = list(dict.fromkeys(subscriptions))
        deadline = time.monotonic() + (self.ack_timeout if timeout is None else timeout)
        with self._wants_lock:
            before = {s for s in wanted if stream.id in self._local.holders(s)}
            self._local.acquire(stream.id, wanted)
            try:
                self.backend.wants.put(self.me, self._mine())
            except BaseException:
                self._local.release(stream.id, [s for s in wanted if s not in before])
                raise
        self._poke()
        with self._cond:
            while True:
                refused = [s for s in wanted if s in self._refused]
                if refused or all(s in self._active for s in wanted):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.25))
            missing = [s for s in wanted if s not in self._active]
            reasons = {s: self._refused[s] for s in refused}
        if not missing:
            return
        self.unsubscribe(stream, [s for s in wanted if s not in before], None)
        if reasons:
            _, (code, text) = sorted(reasons.items())[0]
            if code == "OPSP0008":
                raise SubscriptionLimitError(text, cap=SUBSCRIPTION_CAP, held=tuple(str(s) for s in self._active))
            raise SubscriptionRefusedError(text, msg_cd=code, msg1=text)
        raise RealtimeTimeoutError(
            f"the app key's session owner did not confirm {', '.join(map(str, missing))} within "
            f"{self.ack_timeout if timeout is None else timeout:g}s (owner: {self._owner_text()}); nothing kept"
        )

    def unsubscribe(self, stream: Stream, subscriptions: list[Subscription], timeout: float | None) -> None:
        """Let go; the owner unsubscribes at KIS once no process wants it. Does not wait."""
        with self._wants_lock:
            freed = self._local.release(stream.id, subscriptions)
            if freed:
                self.backend.wants.put(self.me, self._mine(), check_cap=False)
        if freed:
            self._poke()

    def detach(self, stream: Stream) -> None:
        with self._streams_lock:
            self._streams.pop(stream.id, None)
        with self._wants_lock:
            freed = self._local.release(stream.id)
            if freed:
                try:
                    self.backend.wants.put(self.me, self._mine(), check_cap=False)
                except Exception as exc:  # the entry lapses by itself within WANTS_TTL
                    _log.warning("releasing a stream's wants failed: %s", exc)
        if freed:
            self._poke()

    def _poke(self) -> None:
        if self.is_owner:
            self._nudge.set()
        else:
            client = self._client
            if client is not None:
                client.nudge()

    def _owner_text(self) -> str:
        try:
            state = self.backend.coordinator.state()
        except Exception:
            return "unknown"
        return "none" if state is None else f"{state.owner.host} pid {state.owner.pid}"

    # -- delivery -------------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if self._lost_since is not None and not isinstance(event, Gap):
            self._resume()
        with self._streams_lock:
            streams = dict(self._streams)
        holders = holders_of(event, self._local, self.hts_id)
        targets = streams.values() if holders is None else [streams[h] for h in holders if h in streams]
        for stream in targets:
            stream.deliver(event)

    def _mark_lost(self, reason: str) -> None:
        with self._cond:
            if self._lost_since is None:
                self._lost_since = self._last_message or kst_now()
                self._lost_reason = reason
            self._active = frozenset()
            self._cond.notify_all()

    def _resume(self) -> None:
        with self._cond:
            start, reason = self._lost_since, self._lost_reason
            self._lost_since = None
        if start is not None:
            self.stats["gaps"] += 1
            self._dispatch(Gap(start=start, end=kst_now(), reason=f"the session owner changed: {reason}"))

    # -- follower --------------------------------------------------------------------------------

    def _on_relay(self, message: str) -> None:
        self._last_message = kst_now()
        decoded = decode(message)
        if decoded is None:
            return
        if isinstance(decoded, frames.DataFrame):
            for event in events_of(decoded):
                self._dispatch(event)
            return
        kind = decoded.get("t")
        if kind == "state":
            self._take_state(decoded)
        elif kind == "gap":
            self._dispatch(parse_gap(decoded))

    def _take_state(self, state: dict[str, Any]) -> None:
        active = frozenset(s for s in (subscription_of(str(x)) for x in state.get("active", [])) if s is not None)
        refused: dict[Subscription, tuple[str, str]] = {}
        raw_refused = state.get("refused")
        if isinstance(raw_refused, dict):
            for text, why in raw_refused.items():
                s = subscription_of(str(text))
                if s is not None and isinstance(why, list) and len(why) == 2:
                    refused[s] = (str(why[0]), str(why[1]))
        generation = state.get("gen")
        if self._owner_generation is not None and generation != self._owner_generation:
            self._mark_lost("the session owner changed")  # before any frame of the new owner's
        self._owner_generation = generation if isinstance(generation, int) else None
        with self._cond:
            self._active, self._refused = active, refused
            self._cond.notify_all()
        if state.get("ready") and self._lost_since is not None:
            self._resume()

    def _on_relay_lost(self, reason: str) -> None:
        _log.info("lost the session owner's relay: %s", reason)
        self._mark_lost(reason)

    def _follow(self) -> None:
        client = self._client
        if client is not None and client.alive:
            silence = self.backend.silence_bound
            last = self._last_message
            quiet = silence is not None and last is not None and (kst_now() - last).total_seconds() > silence
            if quiet and self._lost_since is None:
                self._mark_lost(f"the session owner was silent for {silence:g}s")
            return
        if client is not None:
            client.close()
        client = self.backend.relay_client()
        if client.connect(self._on_relay, self._on_relay_lost):
            self._client = client
            if self.backend.silence_bound is not None and self._last_message is None:
                self._last_message = kst_now()
        else:
            self._client = None

    def _stop_following(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the election loop -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                generation = self.backend.coordinator.try_acquire(self.me)
            except Exception as exc:
                _log.warning("the session election failed: %s", exc)
                generation = None
            if generation is not None:
                self._stop_following()
                if self._lost_since is None and self._last_message is not None:
                    self._mark_lost("the previous owner went away")
                try:
                    self._own(generation)
                except Exception:
                    _log.exception("the real-time session owner failed")
                continue
            try:
                self._follow()
            except Exception as exc:
                _log.warning("following the session owner failed: %s", exc)
            self._closing.wait(ELECTION_POLL)

    def _heartbeat(self) -> None:
        while not self._closing.wait(WANTS_HEARTBEAT):
            with self._wants_lock:
                mine = self._mine()
                if not mine:
                    continue
                try:
                    self.backend.wants.put(self.me, mine)
                except SubscriptionLimitError as exc:
                    _log.error("this process's wants lapsed and no longer fit the cap: %s", exc)
                except Exception as exc:
                    _log.warning("renewing this process's wants failed: %s", exc)

    # -- the owner -------------------------------------------------------------------------------

    def _held(self) -> bool:
        return not self._closing.is_set() and self.backend.coordinator.held()

    def _approval_keys(self, stale: str | None) -> str:
        """The shared approval key: the stored one unless it is the refused one; else issue and store.

        Issued only under the session lease: every Approval call kills the app key's previous key,
        so a process that is not (or no longer) the owner must never call it.
        """
        with self._approval_lock:
            stored = self.backend.approvals.read()
            if stored and stored != stale:
                return stored
            if not self._held():
                raise RealtimeError("not issuing an approval key: this process no longer owns the app key's session")
            key = self._issue_approval()
            if not self.backend.approvals.write(key):
                _log.warning("the approval key just issued was not stored: the session lease was lost meanwhile")
            return key

    def _relay(self, message: str) -> None:
        """Publish to the followers, only while the lease holds (a paused owner's backlog goes nowhere)."""
        server = self._server
        if server is not None and self.backend.coordinator.held():
            server.publish(message)

    def _on_session_event(self, event: Event) -> None:
        if isinstance(event, Gap):
            self._relay(gap_message(event))
        self._dispatch(event)

    def _on_frame(self, text: str) -> None:
        self._relay(text)

    def _state_message(self) -> str:
        with self._cond:
            return control(
                "state",
                gen=self._generation,
                owner=self.me.holder,
                ready=self._ready,
                active=sorted(str(s) for s in self._active),
                refused={str(s): list(v) for s, v in self._refused.items()},
            )

    def _own(self, generation: int) -> None:
        coordinator = self.backend.coordinator
        self._generation = generation
        self.stats["owned"] += 1
        _log.info("this process owns the app key's real-time session (generation %d)", generation)
        server = self.backend.relay_server()
        with self._cond:
            self._active, self._ready = frozenset(), False
        server.start(self._nudge.set, self._state_message)
        self._server = server
        self._relay(self._state_message())  # the new generation, before any frame of ours
        watchdog = threading.Thread(target=self._fence, name="kis-rt-fence", daemon=True)
        watchdog.start()
        backoff = Backoff(base=0.25, cap=2.0)
        published = 0.0
        try:
            if self._closing.wait(self.grace):
                return
            while self._held():
                coordinator.keep()  # this loop is alive: the lease may be renewed a while more
                self._nudge.clear()  # before reading the wants: a nudge from now on is seen next round
                if not self._own_cycle(server, backoff):
                    continue
                if time.monotonic() - published > STATUS_INTERVAL:
                    published = time.monotonic()
                    self._publish_status(coordinator)
                self._nudge.wait(RECONCILE_INTERVAL)
        finally:
            self._drop_session()
            self._server = None
            server.close()
            try:
                coordinator.release()
            except Exception as exc:  # the lease lapses by itself; the streams must still hear of the loss
                _log.warning("releasing the session lease failed: %s", exc)
            with self._cond:
                self._active = frozenset()
                self._ready = False
            if not self._closing.is_set():
                self._mark_lost("this process lost the session ownership")
            _log.info("this process no longer owns the app key's real-time session")

    def _own_cycle(self, server: RelayServer, backoff: Backoff) -> bool:
        """One reconcile of KIS's subscriptions with the shared wants; False after a backoff wait."""
        desired = set(self.backend.wants.union())
        session = self._session
        if session is None and desired - set(self._refused):
            wait = self._opens.wait_time()
            if wait > 0:
                _log.warning("opened %d sockets in the last minute; waiting %.1fs", OPENS_PER_MINUTE, wait)
                self._closing.wait(min(wait, RECONCILE_INTERVAL * 4))
                return False
            self._opens.record()
            session = self._open_session()
            if session is None:
                self._closing.wait(backoff.next())
                return False
        if session is not None and not self._reconcile(session, desired):
            self._drop_session()
            self._closing.wait(max(0.2, backoff.next()))
            return False
        if session is not None:
            backoff.reset()
        self._set_active(session, desired)
        if not self._ready and (session is not None or not desired):
            self._ready = True
        self._relay(self._state_message())
        if self._lost_since is not None and self._ready:
            self._resume()
        return True

    def _publish_status(self, coordinator: Any) -> None:
        try:
            coordinator.publish_state(
                OwnerInfo(self.me, self._generation, self._session_since, tuple(sorted(map(str, self._active))))
            )
        except Exception as exc:
            _log.debug("publishing the owner's state failed: %s", exc)

    def _fence(self) -> None:
        """Self-fencing: the moment the lease is not confirmed any more, the socket closes."""
        while self._server is not None and not self._closing.is_set():
            if not self.backend.coordinator.held():
                _log.warning("the session lease was not confirmed in time; closing the socket (self-fencing)")
                self._drop_session()
                self._nudge.set()
                return
            time.sleep(FENCE_CHECK)

    def _open_session(self) -> Session | None:
        if not self._held():
            return None
        session = Session(
            self.url,
            self._approval_keys,
            self._on_session_event,
            on_frame=self._on_frame,
            may_connect=self._held,
            **self._session_options,
        )
        try:
            session.open()
        except RealtimeError as exc:
            _log.warning("the owner could not open the KIS WebSocket: %s", exc)
            session.close()
            return None
        self._session, self._session_since = session, time.time()
        return session

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        self._session_since = None
        if session is not None:
            session.close()

    def _reconcile(self, session: Session, desired: set[Subscription]) -> bool:
        """Subscribe what is wanted and not held, release what nobody wants; False if the session is unusable."""
        if session.failure is not None:
            return False
        current = {_subscription(tr, key) for tr, key in session.wanted}
        for subscription in sorted(desired - current - set(self._refused)):
            if not self._held():
                return True
            self.backend.coordinator.keep()
            try:
                session.subscribe(subscription.tr_id(mock=self.mock), subscription.key)
            except SessionInUseError:
                self.stats["opsp8996"] += 1
                _log.warning("KIS still holds the previous session (OPSP8996); backing off before a new socket")
                return False
            except SubscriptionLimitError as exc:
                with self._cond:
                    self._refused[subscription] = ("OPSP0008", str(exc))
            except SubscriptionRefusedError as exc:
                with self._cond:
                    self._refused[subscription] = (exc.msg_cd, str(exc))
            except RealtimeTimeoutError as exc:
                _log.warning("subscribing %s timed out: %s", subscription, exc)
                break
            except RealtimeError as exc:
                _log.warning("the session failed while subscribing %s: %s", subscription, exc)
                return False
            self._set_active(session, desired)
            self._relay(self._state_message())
        for subscription in sorted(current - desired):
            try:
                session.unsubscribe(subscription.tr_id(mock=self.mock), subscription.key)
            except RealtimeError as exc:
                _log.warning("unsubscribing %s failed: %s", subscription, exc)
        with self._cond:
            for subscription in [s for s in self._refused if s not in desired]:
                del self._refused[subscription]
        return session.failure is None

    def _set_active(self, session: Session | None, desired: Iterable[Subscription]) -> None:
        active = frozenset() if session is None else frozenset(_subscription(tr, k) for tr, k in session.active)
        with self._cond:
            self._active = active & frozenset(desired)
            self._cond.notify_all()

    # -- shutdown -----------------------------------------------------------------------------------

    def close(self, timeout: float = 3.0) -> None:
        """Close every stream, release this process's wants and the ownership. Idempotent."""
        if self._closing.is_set():
            return
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.close()
        self._closing.set()
        self._nudge.set()
        with self._wants_lock:
            try:
                self.backend.wants.remove(self.me)
            except Exception as exc:
                _log.debug("removing this process's wants failed: %s", exc)
        for thread in self._threads:
            thread.join(timeout)
        self._stop_following()
        self._drop_session()


_NODES: dict[tuple[str, str, str], Node] = {}
_NODES_LOCK = threading.Lock()


def node_for(backend: Backend, app_key_id: str, url: str, issue_approval: Callable[[], str], **options: Any) -> Node:
    """This process's node for the app key and backend, created on first use."""
    key = (backend.describe(), app_key_id, url)
    with _NODES_LOCK:
        node = _NODES.get(key)
        if node is None or node._closing.is_set():
            node = _NODES[key] = Node(backend, url, issue_approval, **options)
        return node


def close_nodes() -> None:
    """Close every node of this process (at exit: the ownership and the wants go at once)."""
    with _NODES_LOCK:
        nodes = list(_NODES.values())
        _NODES.clear()
    for node in nodes:
        try:
            node.close()
        except Exception:
            _log.debug("closing a real-time node failed", exc_info=True)


atexit.register(close_nodes)
