"""The Redis stores' hash, expiry, reads, scripts, hash tags, configuration and errors.

Tests taking ``spy`` run on fakeredis (with Lua) and on the real redis-server.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

import fakeredis
import pytest
import redis
from redis.crc import key_slot

from korea_investment_stock import LockingRedisTokenStorage, RedisTokenStorage, StorageUnavailableError
from korea_investment_stock.errors import ConfigurationError, StorageError
from korea_investment_stock.token import redis_scripts
from korea_investment_stock.token.credentials import Credentials
from korea_investment_stock.token.factory import storage_from_env
from korea_investment_stock.token.lease import Acquired, SaveOutcome
from korea_investment_stock.token.record import credential_fingerprint, key_id
from korea_investment_stock.token.redis import RedisKeys, RedisLease
from korea_investment_stock.token.redis_connect import resolve_target

from .redis_fixtures import fake_redis, redis_backend, redis_prefix, redis_server_url, redis_url  # noqa: F401
from .redis_workers import API_KEY, API_SECRET, make_record


class Spy:
    """A client that records every command it sends (one entry = one round trip)."""

    prefix = "unit:token"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands: list[tuple] = []

    def execute_command(self, *args, **options):
        self.commands.append(args)
        return super().execute_command(*args, **options)


class FakeSpy(Spy, fakeredis.FakeRedis):
    pass


class RealSpy(Spy, redis.Redis):
    pass


@pytest.fixture
def spy(redis_backend):  # noqa: F811
    client = redis_backend.client(FakeSpy if redis_backend.name == "fakeredis" else RealSpy)
    client.prefix = redis_backend.prefix
    return client


def store(client, cls=RedisTokenStorage, **kwargs):
    return cls(client=client, key_prefix=client.prefix, **kwargs)


def round_trips(commands) -> list[str]:
    """Command names, without the NOSCRIPT detour a cold server causes (EVALSHA, SCRIPT LOAD, EVALSHA)."""
    names: list[str] = []
    for command in commands:
        if command[0] == "SCRIPT LOAD":
            names.pop()  # the EVALSHA that got NOSCRIPT
            continue
        names.append(command[0])
    return names


# ------------------------------------------------------------------------------ the hash
def test_hash_holds_the_documented_fields_and_never_the_secret(spy):
    storage = store(spy)
    record = make_record()
    assert storage.save_token(record.to_legacy_dict(API_SECRET)) is True
    stored = spy.hgetall(storage.redis_keys(API_KEY).token)
    assert stored["access_token"] == record.access_token
    assert stored["access_token_token_expired"] == record.expired_text
    assert stored["timestamp"] == str(int(record.expires_at))
    assert stored["api_key"] == API_KEY
    assert stored["fingerprint"] == credential_fingerprint(API_KEY, API_SECRET)
    assert "api_secret" not in stored
    assert all(API_SECRET not in value for value in stored.values())


def test_key_is_prefix_and_a_hash_tagged_key_id(spy):
    storage = store(spy)
    assert storage.redis_keys(API_KEY).token == f"{spy.prefix}:{{{key_id(API_KEY)}}}"


def test_expiry_is_written_with_the_hash_and_not_after_the_token(spy):
    storage = store(spy)
    record = make_record(lifetime=3600)
    storage.save_token(record.to_legacy_dict(API_SECRET))
    assert round_trips(spy.commands) == ["EVALSHA"], "hash and expiry must be one script call"
    assert spy.commands[-1][1] == spy.register_script(redis_scripts.STORE).sha
    life_ms = record.seconds_left() * 1000  # read first: the TTL can only have dropped since
    pttl = spy.pttl(storage.redis_keys(API_KEY).token)
    assert 0 < pttl <= life_ms + 1


def test_round_trip_in_the_legacy_shape(spy):
    storage = store(spy)
    record = make_record()
    storage.save_token(record.to_legacy_dict(API_SECRET))
    assert storage.load_token(API_KEY, API_SECRET) == record.to_legacy_dict(API_SECRET)
    assert storage.check_token_valid(API_KEY, API_SECRET) is True


@pytest.mark.parametrize("method", ["load_token", "check_token_valid"])
def test_reads_are_one_round_trip(spy, method):
    storage = store(spy)
    storage.save_token(make_record().to_legacy_dict(API_SECRET))
    spy.commands.clear()
    getattr(storage, method)(API_KEY, API_SECRET)
    assert round_trips(spy.commands) == ["HGETALL"]


def test_wrong_secret_or_other_key_reads_nothing(spy):
    storage = store(spy)
    storage.save_token(make_record().to_legacy_dict(API_SECRET))
    assert storage.load_token(API_KEY, "another-secret") is None
    assert storage.load_token("PSotherotherotherotherotherother0001", API_SECRET) is None


def test_token_inside_the_refresh_margin_is_not_valid(spy):
    storage = store(spy, refresh_margin=600)
    storage.save_token(make_record(lifetime=300).to_legacy_dict(API_SECRET))
    assert storage.load_token(API_KEY, API_SECRET) is not None
    assert storage.check_token_valid(API_KEY, API_SECRET) is False


def test_expired_token_is_not_stored(spy):
    storage = store(spy)
    assert storage.save_token(make_record(lifetime=-5).to_legacy_dict(API_SECRET)) is False
    assert spy.exists(storage.redis_keys(API_KEY).token) == 0


def test_a_malformed_hash_reads_as_no_token_with_one_warning(spy, caplog):
    storage = store(spy)
    key = storage.redis_keys(API_KEY).token
    spy.hset(key, mapping={"access_token": "x", "expires_at": "soon"})
    with caplog.at_level(logging.WARNING):
        assert storage.load_token(API_KEY, API_SECRET) is None
        assert storage.load_token(API_KEY, API_SECRET) is None
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1


def test_save_never_replaces_a_token_that_expires_later(spy):
    storage = store(spy)
    newer = make_record("eyJ.newer.sig", lifetime=86400)
    older = make_record("eyJ.older.sig", lifetime=3600)
    assert storage.save_token(newer.to_legacy_dict(API_SECRET)) is True
    assert storage.save_token(older.to_legacy_dict(API_SECRET)) is False
    assert storage.load_token(API_KEY, API_SECRET)["access_token"] == "eyJ.newer.sig"


def test_delete_token(spy):
    storage = store(spy)
    assert storage.delete_token(API_KEY, API_SECRET) is False
    storage.save_token(make_record().to_legacy_dict(API_SECRET))
    assert storage.delete_token(API_KEY, API_SECRET) is True
    assert storage.load_token(API_KEY, API_SECRET) is None


def test_compare_and_delete_only_deletes_the_matching_token(spy):
    storage = store(spy)
    storage.save_token(make_record("eyJ.current.sig").to_legacy_dict(API_SECRET))
    spy.commands.clear()
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.someone-elses-dead.sig") is False
    assert storage.load_token(API_KEY, API_SECRET)["access_token"] == "eyJ.current.sig"
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.current.sig") is True
    assert storage.load_token(API_KEY, API_SECRET) is None
    assert round_trips(spy.commands) == ["EVALSHA", "HGETALL", "EVALSHA", "HGETALL"], "one atomic script per delete"


# ------------------------------------------------------------------------------- hash tags
def test_every_key_of_one_app_key_shares_a_cluster_slot():
    keys = RedisKeys.for_api_key("korea_investment:token", API_KEY)
    names = [keys.token, keys.lock, keys.generation, keys.fence, keys.failed("0" * 64), keys.channel]
    names += [keys.lease_lock("stream-owner"), keys.lease_channel("stream-owner")]
    assert len(set(names)) == 8
    assert keys.lease_lock("issue") == keys.lock and keys.lease_channel("issue") == keys.channel
    assert {key_slot(name.encode()) for name in names} == {key_slot(f"{{{key_id(API_KEY)}}}".encode())}
    assert all(f"{{{key_id(API_KEY)}}}" in name for name in names)


def test_every_key_one_script_touches_shares_the_hash_tag(spy, fake_kis):
    """Drive every script through the locking store and check the KEYS of each call."""
    from .redis_workers import issuer

    storage = store(spy, cls=LockingRedisTokenStorage)
    issue = issuer(fake_kis.url, fake_kis.app_key, fake_kis.app_secret)
    record = storage.get_token(fake_kis.app_key, fake_kis.app_secret, issue)  # acquire + fenced save
    storage.invalidate_token(fake_kis.app_key, fake_kis.app_secret, record.access_token)  # compare-and-delete
    storage.save_token(record.to_legacy_dict(fake_kis.app_secret))  # store
    keys = storage.redis_keys(fake_kis.app_key)
    with storage._new_lease(Credentials(fake_kis.app_key, fake_kis.app_secret)) as lease:
        assert lease.acquire(time.monotonic() + 5) is Acquired.HELD  # acquire again
        assert lease.held()  # the held check
    storage._call("renewing", storage._renew_script, keys=[keys.lock], args=["owner", 1000])
    held = storage.purpose_lease(fake_kis.app_key, "stream-owner")  # the long-lived hold, same scripts
    assert held.try_acquire() is not None and held.held()
    assert held.fenced_set(f"{keys.token}:stream-owner:note", "x", 1.0)  # the fenced write
    held.release()
    scripted = [c for c in spy.commands if c[0] in ("EVALSHA", "EVAL")]
    seen_scripts = {c[1] for c in scripted}
    assert seen_scripts == {storage._client.register_script(s).sha for s in redis_scripts.ALL_SCRIPTS.values()}
    for command in scripted:
        numkeys = int(command[2])
        touched = command[3 : 3 + numkeys]
        assert numkeys >= 1
        assert len({key_slot(k.encode()) for k in touched}) == 1, touched
        assert all(f"{{{key_id(fake_kis.app_key)}}}" in k for k in touched)


@pytest.mark.parametrize("name", sorted(redis_scripts.ALL_SCRIPTS))
def test_scripts_only_touch_keys_they_are_given(name):
    source = redis_scripts.ALL_SCRIPTS[name]
    assert ".." not in source, "no key names may be built inside Lua"
    for command, first in re.findall(r"redis\.p?call\('(\w+)', ([^,)]+)", source):
        if command == "PUBLISH":
            assert first.startswith("ARGV[")
        else:
            assert first.startswith("KEYS[") or first == "key", (command, first)
    for helper_argument in re.findall(r"(?<!function )\b(?:read|stored_token)\(([^)]*)\)", source):
        assert helper_argument.startswith("KEYS["), helper_argument


@pytest.mark.parametrize("prefix", ["", "a{}b", "{}"])
def test_prefixes_that_would_split_slots_are_refused(fake_redis, prefix):  # noqa: F811
    with pytest.raises(ConfigurationError):
        RedisTokenStorage(client=fake_redis, key_prefix=prefix)


def test_a_prefix_with_its_own_hash_tag_still_keeps_one_slot():
    keys = RedisKeys.for_api_key("{tenant}:token", API_KEY)
    names = (keys.token, keys.lock, keys.failed("0" * 64), keys.generation, keys.fence)
    assert len({key_slot(n.encode()) for n in names}) == 1


# ------------------------------------------------------------------------- configuration
def test_password_precedence_and_redaction():
    env = {"KOREA_INVESTMENT_REDIS_PASSWORD": "env-pw"}
    plain = resolve_target("redis://cache.internal:6380/2", None, env)
    assert plain.password == "env-pw", "the variable is used when the URL has no password"
    assert plain.location == "redis://:***@cache.internal:6380/2"
    assert "env-pw" not in plain.url and "env-pw" not in repr(plain)

    in_url = resolve_target("redis://:url-pw@cache.internal:6380/2", None, env)
    assert in_url.password == "url-pw"
    assert "url-pw" not in in_url.url

    explicit = resolve_target("redis://:url-pw@cache.internal/0", "arg-pw", env)
    assert explicit.password == "arg-pw"
    assert explicit.location == "redis://:***@cache.internal:6379/0"

    none = resolve_target("redis://cache.internal", "", env)
    assert none.password is None
    assert none.location == "redis://cache.internal:6379/0"


def test_acl_user_tls_and_unix_urls():
    acl = resolve_target("rediss://kis-app:s3cret@10.0.0.5:6390/1", None, {})
    assert acl.url == "rediss://kis-app@10.0.0.5:6390/1"
    assert acl.password == "s3cret"
    assert acl.location == "rediss://kis-app:***@10.0.0.5:6390/1"

    unix = resolve_target("unix:///run/redis/redis.sock?db=3&password=pw", None, {})
    assert unix.password == "pw"
    assert "pw" not in unix.url.replace("/run", "")
    assert unix.location == "unix://:***@/run/redis/redis.sock?db=3"

    ipv6 = resolve_target("redis://[::1]:6379/0", None, {})
    assert ipv6.location == "redis://[::1]:6379/0"


def test_clients_built_from_urls_carry_our_settings():
    storage = RedisTokenStorage("rediss://kis-app@127.0.0.1:6390/4", password="pw", ping=False)
    kwargs = storage._client.connection_pool.connection_kwargs
    assert storage._client.connection_pool.connection_class is redis.SSLConnection
    assert kwargs["username"] == "kis-app"
    assert kwargs["password"] == "pw"
    assert kwargs["db"] == 4
    assert kwargs["socket_timeout"] == 3.0
    assert kwargs["socket_connect_timeout"] == 3.0
    unix = RedisTokenStorage("unix:///tmp/redis.sock?db=2", ping=False)
    assert unix._client.connection_pool.connection_class is redis.UnixDomainSocketConnection
    assert unix.location == "unix:///tmp/redis.sock?db=2"


@pytest.mark.parametrize("url", ["http://localhost", "localhost:6379", "redis://host:notaport/0"])
def test_unusable_urls_are_configuration_errors_without_echoing_secrets(url):
    with pytest.raises(ConfigurationError) as caught:
        RedisTokenStorage(url.replace("://", "://:hunter2@") if "://" in url else url)
    assert "hunter2" not in str(caught.value)


def test_repr_never_shows_the_password():
    storage = LockingRedisTokenStorage("redis://:hunter2@127.0.0.1:6379/0", ping=False)
    assert "hunter2" not in repr(storage)
    assert "redis://:***@127.0.0.1:6379/0" in repr(storage)


def test_settings_are_validated(fake_redis):  # noqa: F811
    for bad in (
        {"lease_seconds": 0},
        {"lease_seconds": 0.01},
        {"poll_interval": 0.8},
        {"failure_backoff": -1},
        {"socket_timeout": float("inf")},
        {"poll_interval": True},
    ):
        with pytest.raises(ConfigurationError):
            LockingRedisTokenStorage(client=fake_redis, **bad)


def test_from_env_and_the_factory(monkeypatch):
    servers = fakeredis.FakeServer()
    urls = []

    def fake_from_url(url, **kwargs):  # as 0.6.1's users do: the construction ping reaches fakeredis
        urls.append(url)
        return fakeredis.FakeRedis(server=servers)

    monkeypatch.setattr(redis, "from_url", fake_from_url)
    env = {
        "KOREA_INVESTMENT_TOKEN_STORAGE": "redis",
        "KOREA_INVESTMENT_REDIS_URL": "redis://cache.internal:6390/5",
        "KOREA_INVESTMENT_REDIS_PASSWORD": "from-env",
    }
    storage = storage_from_env(env)
    assert isinstance(storage, LockingRedisTokenStorage)
    assert storage.location == "redis://:***@cache.internal:6390/5"
    assert urls[-1] == "redis://:from-env@cache.internal:6390/5"
    default = LockingRedisTokenStorage.from_env({})
    assert default.location == "redis://localhost:6379/0"
    url_wins = LockingRedisTokenStorage.from_env({**env, "KOREA_INVESTMENT_REDIS_URL": "redis://:in-url@h/0"})
    assert url_wins.location == "redis://:***@h:6379/0" and urls[-1] == "redis://:in-url@h/0"
    assert storage.key_prefix == default.key_prefix == "korea_investment:token"
    prefixed = storage_from_env({**env, "KOREA_INVESTMENT_REDIS_KEY_PREFIX": "team-a:kis"})
    assert prefixed.key_prefix == "team-a:kis"
    assert prefixed.redis_keys("PSkey").token.startswith("team-a:kis:{")


def test_missing_redis_package_says_how_to_install_it():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import korea_investment_stock\n"
        "from korea_investment_stock import LockingRedisTokenStorage\n"
        "try:\n"
        "    LockingRedisTokenStorage()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'redis>=4.5.0'" in out.stdout and "redis 패키지가 필요합니다" in out.stdout


# ------------------------------------------------------------------------------- errors
class BrokenRedis(fakeredis.FakeRedis):
    """A client whose every command fails the way an unreachable server does."""

    def execute_command(self, *args, **options):
        raise redis.exceptions.ConnectionError("Error 111 connecting to cache:6379 (password hunter2)")


def test_connection_errors_become_storage_unavailable_and_are_scrubbed(caplog):
    client = BrokenRedis(server=fakeredis.FakeServer(), decode_responses=True)
    client.connection_pool.connection_kwargs["password"] = "hunter2"
    storage = LockingRedisTokenStorage(client=client)
    with caplog.at_level(logging.DEBUG), pytest.raises(StorageUnavailableError) as caught:
        storage.load_token(API_KEY, API_SECRET)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "hunter2" not in caplog.text
    health = storage.health_check()
    assert health.reachable is False and "hunter2" not in (health.error or "")


class RefusingRedis(fakeredis.FakeRedis):
    """A server that answers every command with an error reply."""

    def execute_command(self, *args, **options):
        raise redis.exceptions.ResponseError("ERR unknown command, or a proxy that refuses it")


def test_other_redis_errors_become_storage_errors():
    storage = RedisTokenStorage(client=RefusingRedis(server=fakeredis.FakeServer()), key_prefix="unit:token")
    with pytest.raises(StorageError) as caught:
        storage.load_token(API_KEY, API_SECRET)
    assert not isinstance(caught.value, StorageUnavailableError)
    assert "ERR unknown command" in str(caught.value)


# ------------------------------------------------------------------ hostile stored values
def plant(client, keys, what, fingerprint: str):
    if what == "string-at-token-key":
        client.set(keys.token, "a string from another program")
    elif what == "list-at-token-key":
        client.rpush(keys.token, "x")
    elif what == "lock-key-is-a-hash":
        client.hset(keys.lock, mapping={"owner": "x"})
    elif what == "generation-not-an-integer":
        client.set(keys.generation, "not-a-number")
    elif what == "failed-marker-is-a-list":
        client.rpush(keys.failed(fingerprint), "x")
    elif what == "non-utf8-field":
        client.hset(
            keys.token, mapping={**forged_hash(), "token_type": b"\x80\xff", "api_key": b"\xfe" + API_KEY.encode()}
        )
    elif what in ("inf", "1e400", "nan", "3e11"):
        client.hset(keys.token, mapping={**forged_hash(), "expires_at": what})
    else:
        raise AssertionError(what)


def forged_hash(api_key: str = API_KEY) -> dict:
    now = time.time()
    return {
        "access_token": "eyJ.forged.sig",
        "api_key": api_key,
        "fingerprint": "0" * 64,
        "expires_at": repr(now + 80000),
        "issued_at": repr(now),
        "generation": "7",
    }


@pytest.mark.parametrize(
    "what",
    [
        "string-at-token-key",
        "list-at-token-key",
        "lock-key-is-a-hash",
        "generation-not-an-integer",
        "failed-marker-is-a-list",
        "non-utf8-field",
        "inf",
        "1e400",
        "nan",
        "3e11",
    ],
)
def test_whatever_sits_under_our_names_heals_with_one_issuance(redis_backend, fake_kis, what):  # noqa: F811
    from .redis_workers import issuer

    client = redis_backend.client()
    storage = LockingRedisTokenStorage(client=client, key_prefix=redis_backend.prefix)
    keys = storage.redis_keys(fake_kis.app_key)
    plant(client, keys, what, credential_fingerprint(fake_kis.app_key, fake_kis.app_secret))
    issue = issuer(fake_kis.url, fake_kis.app_key, fake_kis.app_secret)
    assert storage.load_token(fake_kis.app_key, fake_kis.app_secret) is None
    for _ in range(3):  # one after another: only the first may call tokenP
        fresh = LockingRedisTokenStorage(client=redis_backend.client(), key_prefix=redis_backend.prefix)
        record = fresh.get_token(fake_kis.app_key, fake_kis.app_secret, issue)
    assert fake_kis.stats.tokenp_requests == 1
    assert storage.load_token(fake_kis.app_key, fake_kis.app_secret)["access_token"] == record.access_token
    assert client.type(keys.token) == "hash"


def test_a_generation_counter_that_is_not_a_number_restarts_above_the_fence(spy):
    storage = store(spy, cls=LockingRedisTokenStorage)
    keys = storage.redis_keys(API_KEY)
    far_future = 10**15  # above any clock reading: only the fence can explain the answer
    spy.set(keys.fence, str(far_future), px=60_000)
    spy.set(keys.generation, "garbage")
    verdict = storage._acquire_script(
        keys=[keys.lock, keys.generation, keys.failed("0" * 64), keys.fence], args=["me", 5000, 60_000]
    )
    assert verdict == ["lead", far_future + 1]
    assert spy.pttl(keys.generation) > 0


def test_a_client_decoding_responses_reads_non_utf8_as_no_token(fake_redis):  # noqa: F811
    storage = RedisTokenStorage(client=fake_redis, key_prefix="unit:token")
    fake_redis.hset(storage.redis_keys(API_KEY).token, mapping={**forged_hash(), "token_type": b"\x80\xff"})
    assert storage.load_token(API_KEY, API_SECRET) is None


def test_health_check_reports_round_trip(fake_redis):  # noqa: F811
    health = RedisTokenStorage(client=fake_redis).health_check()
    assert health.reachable is True
    assert health.round_trip_ms is not None and 0 <= health.round_trip_ms < 1000
    assert health.error is None


# -------------------------------------------------------------------------- fork guards
def inherited_lease(storage, owner: str, generation: int = 1) -> RedisLease:
    """A lease as a forked child sees its parent's: same owner string, another pid."""
    lease = RedisLease(storage, Credentials(API_KEY, API_SECRET))
    lease.owner, lease.generation, lease.pid, lease.taken = owner, generation, -1, True
    return lease


def test_a_lease_from_another_pid_is_never_used(spy):
    """A handle inherited across fork() neither releases nor saves as the parent's lease holder."""
    storage = store(spy, cls=LockingRedisTokenStorage)
    keys = storage.redis_keys(API_KEY)
    marker = keys.failed(credential_fingerprint(API_KEY, API_SECRET))
    spy.set(keys.lock, "parent-owner", px=10_000)
    inherited_lease(storage, "parent-owner").release(RuntimeError("boom"))
    assert spy.get(keys.lock) == "parent-owner"
    assert spy.get(marker) is None
    spy.set(keys.fence, "5", px=60_000)
    assert inherited_lease(storage, "parent-owner").save(make_record()) is SaveOutcome.REFUSED
    assert spy.get(keys.lock) == "parent-owner", "the parent's lease is not released by the child"


def test_lease_renewal_thread_stops_when_released(spy):
    storage = store(spy, cls=LockingRedisTokenStorage, lease_seconds=0.3)
    keys = storage.redis_keys(API_KEY)
    lease = storage._new_lease(Credentials(API_KEY, API_SECRET))
    assert lease.acquire(time.monotonic() + 5) is Acquired.HELD
    time.sleep(0.5)  # longer than the lease: only renewal can keep it
    assert spy.get(keys.lock) == lease.owner
    lease.release()
    assert spy.get(keys.lock) is None
    assert lease._stop.is_set()


def test_a_sentinel_master_client_is_accepted_and_described_without_its_password():
    from redis.sentinel import Sentinel

    master = Sentinel([("127.0.0.1", 26379)], socket_timeout=1).master_for("kis-master", password="hunter2", db=2)
    storage = LockingRedisTokenStorage(client=master)  # no I/O until first use
    assert storage.location == "redis+sentinel://:***@kis-master/2"
    assert "hunter2" not in repr(storage)
