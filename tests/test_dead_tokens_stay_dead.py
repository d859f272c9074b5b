"""A delayed save of a token that compare-and-delete removed can never bring it back.

KIS hands back the same token for hours, so a lease granted *before* the delete
can come back from tokenP holding exactly the token that was just found dead
(revoked, or refused with ``EGW00121``) and try to store it.  Whether it still
holds its lease or lost it meanwhile, the store must refuse that token; a fresh
one, and a token removed by the unconditional 0.6.x ``delete_token``, are
stored as ever.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from korea_investment_stock.token.credentials import Credentials
from korea_investment_stock.token.file import FileTokenStorage
from korea_investment_stock.token.lease import Acquired, SaveOutcome
from korea_investment_stock.token.redis import LockingRedisTokenStorage, RedisTokenStorage

from .redis_fixtures import redis_backend, redis_prefix, redis_server_url, redis_url  # noqa: F401
from .workers import API_KEY, API_SECRET, make_record

DEAD = "eyJ.handed-back-then-revoked.sig"
FRESH = "eyJ.a-fresh-one.sig"


def node(backend: Any) -> LockingRedisTokenStorage:
    return LockingRedisTokenStorage(client=backend.client(), key_prefix=backend.prefix)


def take_lease(storage: Any) -> Any:
    lease = storage._new_lease(Credentials(API_KEY, API_SECRET))
    assert lease.acquire(time.monotonic() + 5) is Acquired.HELD
    return lease


def stored(storage: Any) -> str | None:
    data = storage.load_token(API_KEY, API_SECRET)
    return None if data is None else data["access_token"]


@pytest.mark.parametrize("still_held", [True, False], ids=["lease-held", "lease-lost"])
def test_a_lease_from_before_the_delete_cannot_store_the_dead_token(redis_backend, still_held):  # noqa: F811
    first, other = node(redis_backend), node(redis_backend)
    first.save_token(make_record(DEAD).to_legacy_dict(API_SECRET))  # stored by an earlier lease
    lease = take_lease(first)  # granted before the delete; its tokenP answers DEAD again
    if not still_held:
        lease._stop.set()  # paused: no more renewal
        redis_backend.client().delete(first.redis_keys(API_KEY).lock)  # and its lease lapsed
    assert other.invalidate_token(API_KEY, API_SECRET, DEAD)  # KIS said EGW00121: delete it
    assert lease.save(make_record(DEAD)) is SaveOutcome.REFUSED
    assert stored(other) is None, "the dead token is back in the store"


def test_a_fresh_token_from_the_same_lease_is_stored(redis_backend):  # noqa: F811
    first, other = node(redis_backend), node(redis_backend)
    first.save_token(make_record(DEAD).to_legacy_dict(API_SECRET))
    lease = take_lease(first)
    assert other.invalidate_token(API_KEY, API_SECRET, DEAD)
    assert lease.save(make_record(FRESH)) is SaveOutcome.STORED
    assert stored(other) == FRESH


def test_the_plain_redis_store_refuses_the_dead_token_too(redis_backend):  # noqa: F811
    store = RedisTokenStorage(client=redis_backend.client(), key_prefix=redis_backend.prefix)
    store.save_token(make_record(DEAD).to_legacy_dict(API_SECRET))
    assert store.invalidate_token(API_KEY, API_SECRET, DEAD)
    assert store.save_token(make_record(DEAD).to_legacy_dict(API_SECRET)) is False
    assert stored(store) is None
    assert store.save_token(make_record(FRESH).to_legacy_dict(API_SECRET)) is True


def test_an_unconditional_delete_leaves_no_tombstone(redis_backend):  # noqa: F811
    """0.6.x delete_token means "forget it", not "it is dead": KIS's same token may be stored again."""
    store = node(redis_backend)
    store.save_token(make_record(DEAD).to_legacy_dict(API_SECRET))
    assert store.delete_token(API_KEY, API_SECRET)
    lease = take_lease(store)
    assert lease.save(make_record(DEAD)) is SaveOutcome.STORED


def test_the_file_store_refuses_the_dead_token_from_a_lease_taken_before_the_delete(tmp_path: Path):
    token_file = tmp_path / "kis" / "token.key"
    first, other = FileTokenStorage(token_file), FileTokenStorage(token_file)
    first.save_token(make_record(DEAD).to_legacy_dict(API_SECRET))
    lease = take_lease(first)
    assert other.invalidate_token(API_KEY, API_SECRET, DEAD)
    assert lease.save(make_record(DEAD)) is SaveOutcome.REFUSED
    assert stored(other) is None, "the dead token is back in the token file"
    assert FileTokenStorage(token_file).save_token(make_record(FRESH).to_legacy_dict(API_SECRET))
    assert stored(other) == FRESH


def test_the_file_store_remembers_dead_tokens_only_while_they_could_live(tmp_path: Path):
    """A tombstone lasts as long as the token it names could have: the file does not grow for good."""
    import json

    token_file = tmp_path / "kis" / "token.key"
    store = FileTokenStorage(token_file)
    short = make_record("eyJ.short-lived.sig", lifetime=1.0)
    store.save_token(short.to_legacy_dict(API_SECRET))
    assert store.invalidate_token(API_KEY, API_SECRET, short.access_token)
    assert json.loads(token_file.read_text())["dead"], "no tombstone was written"
    time.sleep(1.1)  # the dead token's own expiry is the subject here
    store.save_token(make_record(FRESH).to_legacy_dict(API_SECRET))
    assert not json.loads(token_file.read_text()).get("dead"), "an expired tombstone stayed in the file"
