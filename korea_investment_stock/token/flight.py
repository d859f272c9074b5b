"""In-process single flight: one leader thread per key, followers share its outcome.

Only the leader talks to the backend, so backend load grows with processes, not
threads.  Followers get the leader's result *or its exception*: a failed
issuance fails everyone who was waiting for it, once, instead of each of them
retrying on its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import TokenWaitTimeout

T = TypeVar("T")


@dataclass
class _Call(Generic[T]):
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Deduplicate concurrent calls per key within this process.

    State is reset in a forked child: a flight whose leader thread lived in the
    parent would never finish in the child.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[T]] = {}
        # Bound method kept by the fork hook; the instance lives as long as the module.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._calls = {}

    def run(self, key: Hashable, fn: Callable[[], T], follower_timeout: float) -> T:
        """Run ``fn`` once for all concurrent callers with the same ``key``.

        ``follower_timeout`` bounds how long a follower waits for the leader.
        """
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = _Call()
                self._calls[key] = call
        if leader:
            return self._lead(key, call, fn)
        if not call.done.wait(follower_timeout):
            raise TokenWaitTimeout(
                f"waited {follower_timeout:.1f}s for another thread of this process to obtain the token; "
                "retry, and check the KIS host and the token store if it keeps happening"
            )
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _lead(self, key: Hashable, call: _Call[T], fn: Callable[[], T]) -> T:
        try:
            call.result = fn()
            return call.result
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                if self._calls.get(key) is call:
                    del self._calls[key]
            call.done.set()
