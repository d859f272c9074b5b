"""Hostile token files (hypothesis): whatever sits at the token path, no caller ever crashes.

Random bytes, truncated JSON, wrong types, huge files, legacy pickles (hostile ones
included), a symlink, an empty file, a FIFO: the store reads each as "no token"
(with a warning), the client gets a real token from the fake KIS and quotes with
it, and the next save replaces the thing with a proper token file without ever
writing through a symlink.  A directory at the token path can never be saved to,
so the store refuses it at once with a ConfigurationError that names the path.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import shutil
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from korea_investment_stock import ConfigurationError, KoreaInvestment
from korea_investment_stock.token.file import FILE_FORMAT, MAX_FILE_BYTES, FileTokenStorage
from korea_investment_stock.token.record import format_kst, key_id

from .harness import Outcome, summarize
from .workers import ACCOUNT, quote

EXAMPLES_CI = 150
FIXED_NOW = 1_900_000_000.0
EXAMPLES_FULL = 1000

SPECIALS = (
    "symlink-to-valid-file",
    "symlink-dangling",
    "symlink-loop",
    "symlink-to-dev-zero",
    "symlink-to-directory",
    "directory",
    "fifo",
    "empty",
)
ENTRY_FIELDS = (
    "access_token",
    "access_token_token_expired",
    "expires_at",
    "issued_at",
    "api_key",
    "fingerprint",
    "token_type",
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


class _Evil:
    """Pickles to a call of os.system: the restricted unpickler must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _document(
    api_key: str, entry_overrides: dict | None = None, top_overrides: dict | None = None, now: float | None = None
) -> dict:
    now = time.time() if now is None else now
    entry = {
        "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.forged.sig",
        "access_token_token_expired": format_kst(now + 80000),
        "expires_at": now + 80000,
        "issued_at": now,
        "api_key": api_key,
        "fingerprint": "0" * 64,  # the forger does not know the secret
        "token_type": "Bearer",
    }
    entry.update(entry_overrides or {})
    document = {"format": FILE_FORMAT, "version": 1, "tokens": {key_id(api_key): entry}}
    document.update(top_overrides or {})
    return document


@st.composite
def hostile(draw):
    """(kind, payload): bytes to write at the token path, or a special kind to build."""
    kind = draw(st.sampled_from(["bytes", "truncated", "wrong-type", "huge", "pickle", "text", "special"]))
    if kind == "bytes":
        return kind, draw(st.binary(max_size=4096))
    if kind == "truncated":
        raw = json.dumps(_document("{api_key}", now=FIXED_NOW)).encode()  # deterministic length
        return kind, raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "wrong-type":
        value = draw(json_values)
        where = draw(st.sampled_from(["entry", "top", "tokens-entry"]))
        if where == "entry":
            return kind, {"entry": {draw(st.sampled_from(ENTRY_FIELDS)): value}}
        if where == "top":
            return kind, {"top": {draw(st.sampled_from(["format", "version", "tokens"])): value}}
        return kind, {"top": {"tokens": {"{key_id}": value}}}
    if kind == "huge":
        shape = draw(st.sampled_from(["padding", "nesting", "long-token"]))
        size = draw(st.integers(MAX_FILE_BYTES - 64, MAX_FILE_BYTES + 4096))
        return kind, (shape, size)
    if kind == "pickle":
        shape = draw(st.sampled_from(["random", "wrong-types", "evil"]))
        if shape == "random":
            return kind, (shape, b"\x80" + draw(st.binary(max_size=512)))
        if shape == "wrong-types":
            return kind, (
                shape,
                draw(
                    st.dictionaries(
                        st.sampled_from(
                            ["access_token", "api_key", "api_secret", "timestamp", "access_token_token_expired"]
                        ),
                        json_values,
                        max_size=5,
                    )
                ),
            )
        return kind, (shape, None)
    if kind == "text":
        return kind, draw(st.text(max_size=512)).encode("utf-8", "surrogatepass")
    return kind, draw(st.sampled_from(SPECIALS))


def _plant(path: Path, kind: str, payload, api_key: str, outside: Path) -> dict:
    """Put the hostile thing at ``path``; return what must stay untouched."""
    keep: dict = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("bytes", "text"):
        path.write_bytes(payload)
    elif kind == "truncated":
        path.write_bytes(payload.replace(b"{api_key}", api_key.encode()))
    elif kind == "wrong-type":
        top = dict(payload.get("top", {}))
        if "tokens" in top and isinstance(top["tokens"], dict) and "{key_id}" in top["tokens"]:
            top["tokens"] = {key_id(api_key): top["tokens"]["{key_id}"]}
        path.write_text(json.dumps(_document(api_key, payload.get("entry"), top)))
    elif kind == "huge":
        shape, size = payload
        if shape == "padding":
            raw = json.dumps(_document(api_key)).encode()
            path.write_bytes(raw + b" " * max(0, size - len(raw)))
        elif shape == "nesting":
            path.write_bytes(b"[" * size)
        else:
            path.write_text(json.dumps(_document(api_key, {"access_token": "e" * size})))
    elif kind == "pickle":
        shape, data = payload
        if shape == "random":
            path.write_bytes(data)
        elif shape == "wrong-types":
            path.write_bytes(pickle.dumps(data, protocol=4))
        else:
            marker = outside / "pwned"
            path.write_bytes(pickle.dumps({"access_token": _Evil(str(marker)), "api_key": api_key}, protocol=4))
            keep["no-file"] = marker
    elif payload == "symlink-to-valid-file":
        target = outside / "victim.json"
        target.write_text(json.dumps(_document(api_key)))
        path.symlink_to(target)
        keep["target"] = (target, target.read_bytes())
    elif payload == "symlink-dangling":
        path.symlink_to(outside / "nowhere")
        keep["no-file"] = outside / "nowhere"
    elif payload == "symlink-loop":
        path.symlink_to(path)
    elif payload == "symlink-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif payload == "symlink-to-directory":
        path.symlink_to(outside)
    elif payload == "directory":
        path.mkdir()
    elif payload == "fifo":
        os.mkfifo(path)
    elif payload == "empty":
        path.write_bytes(b"")
    return keep


def _read_none_then_heal(make_storage, kis, outcomes: list[Outcome], label: str, payload) -> str:
    """A fresh store over the planted hostile thing reads "no token"; a client on it gets a real
    token and quotes.  Records the caller's outcome; any exception fails the example."""
    try:
        storage = make_storage()
        assert storage.load_token(kis.app_key, kis.app_secret) is None  # forged/garbage: never a token
        assert storage.check_token_valid(kis.app_key, kis.app_secret) is False
        with KoreaInvestment(kis.app_key, kis.app_secret, ACCOUNT, token_storage=storage, base_url=kis.url) as client:
            quote(client)
            token = client._token.access_token
        outcomes.append(Outcome(ok=True, token=token, at=time.time()))
    except Exception as exc:
        outcomes.append(Outcome.failure(exc, limit=200))
        raise AssertionError(f"{label} {payload!r:.200}: {type(exc).__name__}: {exc}") from exc
    return token


@pytest.mark.timeout(300)
def test_hostile_token_files_never_crash(request, tmp_path, kis_factory, issuance_clock, report):
    from .conftest import full_matrix

    examples = EXAMPLES_FULL if full_matrix(request.config) else EXAMPLES_CI
    kis = kis_factory(issue_window=0.0)
    clock = issuance_clock(kis)
    counter = itertools.count()
    outcomes: list[Outcome] = []
    kinds: dict[str, int] = {}
    outside = tmp_path / "outside"
    outside.mkdir()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(hostile())
    def check(case):
        kind, payload = case
        kinds[kind] = kinds.get(kind, 0) + 1
        workdir = tmp_path / f"ex{next(counter)}"
        path = workdir / "token.key"
        keep = _plant(path, kind, payload, kis.app_key, outside)
        if payload == "directory":  # a path that can never be saved to is refused at once, by name
            with pytest.raises(ConfigurationError, match="is a directory"):
                FileTokenStorage(path)
            outcomes.append(Outcome(ok=True, token=None, at=time.time()))
            shutil.rmtree(workdir, ignore_errors=True)
            return
        before = kis.stats.tokenp_requests
        token = _read_none_then_heal(lambda: FileTokenStorage(path), kis, outcomes, kind, payload)
        assert kis.stats.tokenp_requests - before == 1
        if "target" in keep:
            target, content = keep["target"]
            assert target.read_bytes() == content, "the store wrote through a symlink"
        if "no-file" in keep:
            assert not keep["no-file"].exists(), f"{keep['no-file']} was created"
        # The next save replaced whatever was there with a proper token file of ours.
        assert stat.S_ISREG(os.lstat(path).st_mode)
        assert FileTokenStorage(path).load_token(kis.app_key, kis.app_secret)["access_token"] == token
        shutil.rmtree(workdir, ignore_errors=True)

    for special in SPECIALS:  # every special case at least once, whatever hypothesis draws
        check = example(("special", special))(check)
    check = example(("pickle", ("evil", None)))(check)
    for odd in ("\u0080", "\ud800", "\x00" * 64):  # non-ASCII fingerprints once crashed hmac.compare_digest
        check = example(("wrong-type", {"entry": {"fingerprint": odd}}))(check)
    started = time.perf_counter()
    try:
        check()
    finally:
        wall = time.perf_counter() - started
        report(
            summarize(
                "hostile-token-files",
                "file",
                outcomes,
                kis,
                clock,
                wall,
                examples=len(outcomes),
                kinds="/".join(f"{k}:{v}" for k, v in sorted(kinds.items())),
            )
        )
    assert outcomes and all(o.ok for o in outcomes)


# ------------------------------------------------------------------------------- Redis
REDIS_FIELDS = (
    "access_token",
    "access_token_token_expired",
    "timestamp",
    "api_key",
    "fingerprint",
    "token_type",
    "expires_at",
    "issued_at",
    "generation",
)
HOSTILE_NUMBERS = ("nan", "inf", "-inf", "1e400", "-1e400", "9" * 400, "", " ", "0x10", "1_000", "12abc", "\x00")
#: Hostile hashes (and keys beside the token) the store must read as "no token" and replace.
REDIS_SPECIALS = ("huge-hash-field", "forged-valid-token")
#: Keys of the wrong Redis type (another program's data, an old format under our prefix),
#: and values our scripts cannot use: read as "no token" and replaced, like a damaged file.
REDIS_WRONG_TYPES = (
    "string-at-token-key",
    "empty-string-at-token-key",
    "list-at-token-key",
    "set-at-token-key",
    "zset-at-token-key",
    "stream-at-token-key",
    "huge-string-at-token-key",
    "lock-key-is-a-hash",
    "generation-not-an-integer",
    "failed-marker-is-a-list",
)
redis_text = st.one_of(st.text(max_size=64), st.binary(max_size=64), st.sampled_from(HOSTILE_NUMBERS))


@st.composite
def hostile_redis(draw):
    kind = draw(st.sampled_from(["random-hash", "wrong-field", "missing-fields", "special"]))
    if kind == "random-hash":
        return kind, draw(st.dictionaries(redis_text, redis_text, min_size=1, max_size=8))
    if kind == "wrong-field":
        return kind, {draw(st.sampled_from(REDIS_FIELDS)): draw(redis_text)}
    if kind == "missing-fields":
        return kind, draw(st.lists(st.sampled_from(REDIS_FIELDS), min_size=1, max_size=4, unique=True))
    return kind, draw(st.sampled_from(REDIS_SPECIALS))


def _forged_hash(api_key: str) -> dict:
    now = time.time()
    return {
        "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.forged.sig",
        "access_token_token_expired": format_kst(now + 80000),
        "timestamp": str(int(now + 80000)),
        "api_key": api_key,
        "fingerprint": "0" * 64,
        "token_type": "Bearer",
        "expires_at": repr(now + 80000),
        "issued_at": repr(now),
        "generation": "1",
    }


def _our_keys(keys, kis) -> list[str]:
    """Every Redis key our stores use for the fake KIS credential."""
    from korea_investment_stock.token.record import credential_fingerprint

    marker = keys.failed(credential_fingerprint(kis.app_key, kis.app_secret))
    return [keys.token, keys.lock, keys.generation, keys.fence, marker]


def _plant_redis(client, keys, kind: str, payload, kis) -> None:
    api_key = kis.app_key
    client.delete(*_our_keys(keys, kis))
    if kind == "random-hash":
        client.hset(keys.token, mapping=payload)
    elif kind == "wrong-field":
        client.hset(keys.token, mapping={**_forged_hash(api_key), **payload})
    elif kind == "missing-fields":
        fields = _forged_hash(api_key)
        for name in payload:
            fields.pop(name)
        if fields:
            client.hset(keys.token, mapping=fields)
    elif payload == "string-at-token-key":
        client.set(keys.token, json.dumps(_forged_hash(api_key)))
    elif payload == "empty-string-at-token-key":
        client.set(keys.token, "")
    elif payload == "list-at-token-key":
        client.rpush(keys.token, "access_token", "x")
    elif payload == "set-at-token-key":
        client.sadd(keys.token, "access_token")
    elif payload == "zset-at-token-key":
        client.zadd(keys.token, {"access_token": 1.0})
    elif payload == "stream-at-token-key":
        client.xadd(keys.token, {"access_token": "x"})
    elif payload == "huge-string-at-token-key":
        client.set(keys.token, "e" * (2 << 20))
    elif payload == "huge-hash-field":
        client.hset(keys.token, mapping={**_forged_hash(api_key), "access_token": "e" * (2 << 20)})
    elif payload == "lock-key-is-a-hash":
        client.hset(keys.lock, mapping={"owner": "x"})
    elif payload == "generation-not-an-integer":
        client.set(keys.generation, "not-a-number")
    elif payload == "failed-marker-is-a-list":
        client.rpush(_our_keys(keys, kis)[-1], "x")
    elif payload == "forged-valid-token":
        client.hset(keys.token, mapping=_forged_hash(api_key))
    elif payload == "non-utf8-field-value":
        client.hset(keys.token, mapping={**_forged_hash(api_key), "token_type": b"\x80\xff"})


@pytest.mark.timeout(300)
def test_hostile_redis_values_never_crash(request, shared_redis_url, redis_prefix, kis_factory, issuance_clock, report):
    """The Redis counterpart: whatever sits at the token key (or beside it), no caller crashes.

    The stores keep no host copy here, so every case heals by one re-issuance into Redis
    itself (with a host copy, the kept token would replace the hostile value instead).
    """
    import redis

    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    from .conftest import full_matrix

    examples = EXAMPLES_FULL if full_matrix(request.config) else EXAMPLES_CI
    kis = kis_factory(issue_window=0.0)
    clock = issuance_clock(kis)
    outcomes: list[Outcome] = []
    not_replaced: list[str] = []
    kinds: dict[str, int] = {}
    admin = redis.Redis.from_url(shared_redis_url, socket_timeout=5)
    keys = LockingRedisTokenStorage(shared_redis_url, key_prefix=redis_prefix, host_copy=False).redis_keys(kis.app_key)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(hostile_redis())
    def check(case):
        kind, payload = case
        label = payload if kind == "special" else kind
        kinds[label] = kinds.get(label, 0) + 1
        _plant_redis(admin, keys, kind, payload, kis)
        before = kis.stats.tokenp_requests
        token = _read_none_then_heal(
            lambda: LockingRedisTokenStorage(shared_redis_url, key_prefix=redis_prefix, host_copy=False),
            kis,
            outcomes,
            label,
            payload,
        )
        assert kis.stats.tokenp_requests - before == 1
        stored = LockingRedisTokenStorage(shared_redis_url, key_prefix=redis_prefix, host_copy=False).load_token(
            kis.app_key, kis.app_secret
        )
        if stored is None or stored["access_token"] != token:
            not_replaced.append(f"{label}:{payload!r:.60}")
        assert not not_replaced, f"the hostile value was not replaced: {not_replaced[-1]}"

    for special in REDIS_SPECIALS:
        check = example(("special", special))(check)
    started = time.perf_counter()
    try:
        check()
    finally:
        wall = time.perf_counter() - started
        admin.delete(*_our_keys(keys, kis))
        admin.close()
        report(
            summarize(
                "hostile-store-values",
                "redis",
                outcomes,
                kis,
                clock,
                wall,
                examples=len(outcomes),
                not_replaced=len(not_replaced),
                kinds="/".join(f"{k}:{v}" for k, v in sorted(kinds.items())),
            )
        )
    assert outcomes and all(o.ok for o in outcomes)


def _wrong_type_case(shared_redis_url, redis_prefix, kis, payload):
    import redis

    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    admin = redis.Redis.from_url(shared_redis_url, socket_timeout=5)
    storage = LockingRedisTokenStorage(shared_redis_url, key_prefix=redis_prefix, host_copy=False)
    keys = storage.redis_keys(kis.app_key)
    _plant_redis(admin, keys, "special", payload, kis)
    started = time.perf_counter()
    try:
        with KoreaInvestment(kis.app_key, kis.app_secret, ACCOUNT, token_storage=storage, base_url=kis.url) as client:
            quote(client)
        outcome = Outcome(ok=True, token=client._token.access_token, at=time.time())
    except Exception as exc:
        outcome = Outcome.failure(exc, started, keep=True)
    finally:
        admin.delete(*_our_keys(keys, kis))
        admin.close()
    outcome.elapsed = time.perf_counter() - started
    return outcome


@pytest.mark.timeout(120)
def test_wrong_typed_redis_keys_heal(shared_redis_url, redis_prefix, kis_factory, issuance_clock, report):
    """A key of the wrong type (token, lease, generation or failure marker): read as "no token",
    one issuance, and the next save replaces it, as the file store does with a damaged file.

    Found by this suite: it used to wedge every caller with ``StorageError`` until
    an operator deleted the key.
    """
    kis = kis_factory(issue_window=0.0)
    clock = issuance_clock(kis)
    started = time.perf_counter()
    outcomes = {p: _wrong_type_case(shared_redis_url, redis_prefix, kis, p) for p in REDIS_WRONG_TYPES}
    wall = time.perf_counter() - started
    healed = [p for p, o in outcomes.items() if o.ok]
    report(
        summarize(
            "hostile-store-wrong-types",
            "redis",
            list(outcomes.values()),
            kis,
            clock,
            wall,
            cases=len(outcomes),
            healed=len(healed),
        )
    )
    for payload, outcome in outcomes.items():
        assert outcome.ok, f"{payload}: {outcome.error_type}: {outcome.error}"
        assert outcome.elapsed < 3.5, payload
    assert kis.stats.tokenp_requests == len(outcomes)


@pytest.mark.timeout(60)
def test_non_utf8_redis_hash_never_crashes(shared_redis_url, redis_prefix, kis_factory, report):
    """Found by this suite: bytes that are not UTF-8 in the hash raised a bare UnicodeDecodeError."""
    kis = kis_factory(issue_window=0.0)
    outcome = _wrong_type_case(shared_redis_url, redis_prefix, kis, "non-utf8-field-value")
    report(summarize("hostile-store-non-utf8", "redis", [outcome], kis, None, outcome.elapsed))
    assert outcome.ok, f"{outcome.error_type}: {outcome.error}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("expiry", ["inf", "1e400"])
def test_unreadable_infinite_expiry_is_replaced(expiry, shared_redis_url, redis_prefix, kis_factory, report):
    """Found by this suite: an ``expires_at`` Lua reads as infinite was ignored by the reader but
    blocked every save, so each caller issued again (a tokenP call per caller)."""
    import redis

    from korea_investment_stock.token.redis import LockingRedisTokenStorage

    kis = kis_factory(issue_window=0.0)
    admin = redis.Redis.from_url(shared_redis_url, socket_timeout=5)
    keys = LockingRedisTokenStorage(shared_redis_url, key_prefix=redis_prefix, host_copy=False).redis_keys(kis.app_key)
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    try:
        _plant_redis(admin, keys, "wrong-field", {"expires_at": expiry}, kis)
        for _ in range(3):  # three callers one after another: only the first may call tokenP
            storage = LockingRedisTokenStorage(shared_redis_url, key_prefix=redis_prefix, host_copy=False)
            with KoreaInvestment(kis.app_key, kis.app_secret, ACCOUNT, token_storage=storage, base_url=kis.url) as c:
                outcomes.append(Outcome(ok=True, token=c._token.access_token, at=time.time()))
    finally:
        admin.delete(*_our_keys(keys, kis))
        admin.close()
        report(
            summarize(f"hostile-store-expiry[{expiry}]", "redis", outcomes, kis, None, time.perf_counter() - started)
        )
    assert kis.stats.tokenp_requests == 1
