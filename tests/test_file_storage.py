"""FileTokenStorage: permissions, atomic writes, several keys, damaged files, compare-and-delete."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from korea_investment_stock import FileTokenStorage
from korea_investment_stock.token import file as file_module
from korea_investment_stock.token.file import FILE_FORMAT, MAX_FILE_BYTES
from korea_investment_stock.token.record import DEFAULT_REFRESH_MARGIN, key_id

from .workers import API_KEY, API_SECRET, CountingIssuer, make_record

MOCK_KEY = "PSmockmockmockmockmockmockmockmock01"
MOCK_SECRET = "M" * 100 + "mock-secret-that-must-never-hit-the-disk" + "m" * 40
LOGGER = "korea_investment_stock.token.file"
HANG = 60.0


def save(storage: FileTokenStorage, token: str, api_key: str = API_KEY, api_secret: str = API_SECRET, **kw) -> bool:
    return storage.save_token(
        make_record(token, api_key=api_key, api_secret=api_secret, **kw).to_legacy_dict(api_secret)
    )


def loaded_token(storage: FileTokenStorage, api_key: str = API_KEY, api_secret: str = API_SECRET) -> str | None:
    data = storage.load_token(api_key, api_secret)
    return None if data is None else data["access_token"]


def leftovers(directory: Path) -> list[str]:
    """Anything in the directory besides the token file and its lock."""
    return sorted(n for n in os.listdir(directory) if n not in ("token.key", "token.key.lock"))


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------------------------ basics
def test_round_trip_in_the_legacy_shape(token_file):
    storage = FileTokenStorage(token_file)
    assert storage.load_token(API_KEY, API_SECRET) is None
    assert not storage.check_token_valid(API_KEY, API_SECRET)
    record = make_record("eyJ.round-trip.sig")
    assert storage.save_token(record.to_legacy_dict(API_SECRET)) is True
    data = FileTokenStorage(token_file).load_token(API_KEY, API_SECRET)
    assert data == {
        "access_token": "eyJ.round-trip.sig",
        "access_token_token_expired": record.expired_text,
        "timestamp": int(record.expires_at),
        "api_key": API_KEY,
        "api_secret": API_SECRET,
    }
    assert FileTokenStorage(token_file).check_token_valid(API_KEY, API_SECRET)


def test_default_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(tmp_path / "env" / "t.key"))
    assert FileTokenStorage().file_path == tmp_path / "env" / "t.key"
    monkeypatch.delenv("KOREA_INVESTMENT_TOKEN_FILE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert FileTokenStorage().file_path == tmp_path / "home" / ".cache" / "kis" / "token.key"
    # An explicit argument wins over the variable.
    monkeypatch.setenv("KOREA_INVESTMENT_TOKEN_FILE", str(tmp_path / "env" / "t.key"))
    assert FileTokenStorage(tmp_path / "arg.key").file_path == tmp_path / "arg.key"
    assert not (tmp_path / "home").exists()  # constructing touches nothing


def test_lock_path_is_a_sibling(token_file):
    storage = FileTokenStorage(token_file)
    assert storage.lock_path == token_file.with_name("token.key.lock")
    assert str(token_file) in repr(storage)


def test_get_token_issues_once_and_peers_read_it(token_file):
    issuer = CountingIssuer()
    first = FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, issuer)
    second = FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1
    assert first == second


def test_refresh_margin_is_honoured(token_file):
    save(FileTokenStorage(token_file), "eyJ.ten-minutes.sig", lifetime=600)
    assert FileTokenStorage(token_file, refresh_margin=300).check_token_valid(API_KEY, API_SECRET)
    assert not FileTokenStorage(token_file, refresh_margin=900).check_token_valid(API_KEY, API_SECRET)
    issuer = CountingIssuer()
    record = FileTokenStorage(token_file, refresh_margin=900).get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1 and record.access_token != "eyJ.ten-minutes.sig"
    assert FileTokenStorage(token_file).refresh_margin == DEFAULT_REFRESH_MARGIN


def test_an_expired_token_loads_as_none_as_in_0_6_1(token_file):
    storage = FileTokenStorage(token_file)
    save(storage, "eyJ.expired.sig", lifetime=-10)
    assert storage.load_token(API_KEY, API_SECRET) is None  # 0.6.1 code does `if storage.load_token(...)`
    assert not storage.check_token_valid(API_KEY, API_SECRET)
    assert storage.stored_record(API_KEY, API_SECRET).access_token == "eyJ.expired.sig"  # tools still see it


def test_a_token_inside_the_refresh_margin_still_loads(token_file):
    storage = FileTokenStorage(token_file)
    save(storage, "eyJ.nearly.sig", lifetime=60)  # valid for a minute: not expired, but due for refresh
    assert loaded_token(storage) == "eyJ.nearly.sig"
    assert not storage.check_token_valid(API_KEY, API_SECRET)


# ------------------------------------------------------------------------------- permissions
def test_created_directory_is_0700_and_file_0600(token_file):
    assert not token_file.parent.exists()
    FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, CountingIssuer())
    assert mode(token_file.parent) == 0o700
    assert mode(token_file) == 0o600
    assert stat.S_ISREG(os.lstat(token_file).st_mode)


def test_lock_file_is_not_world_writable(token_file):
    FileTokenStorage(token_file).get_token(API_KEY, API_SECRET, CountingIssuer())
    assert mode(token_file.with_name("token.key.lock")) & 0o077 == 0


def test_existing_loose_file_becomes_0600_on_save(token_file):
    token_file.parent.mkdir()
    token_file.write_text("{}")
    os.chmod(token_file, 0o644)
    save(FileTokenStorage(token_file), "eyJ.tight.sig")
    assert mode(token_file) == 0o600


def test_file_bytes_hold_no_secret_and_no_pickle(token_file):
    storage = FileTokenStorage(token_file)
    save(storage, "eyJ.real.sig")
    save(storage, "eyJ.mock.sig", MOCK_KEY, MOCK_SECRET)
    raw = token_file.read_bytes()
    for secret in (API_SECRET, MOCK_SECRET):
        assert secret.encode() not in raw
        assert secret[:24].encode() not in raw
    assert b"\x80" not in raw  # no pickle PROTO opcode (JSON here is pure ASCII)
    assert not raw.startswith((b"\x80", b"(", b"}"))
    document = json.loads(raw)
    assert document["format"] == FILE_FORMAT
    assert "api_secret" not in raw.decode()
    assert b"eyJ.real.sig" in raw and b"eyJ.mock.sig" in raw
    if shutil.which("grep"):  # literally what the issue's acceptance check runs

        def grep(needle: str) -> int:
            return subprocess.run(["grep", "-q", "-F", "-e", needle, str(token_file)], check=False).returncode

        assert grep(API_SECRET) == 1 and grep(MOCK_SECRET) == 1  # 1: no match
        assert grep("eyJ.real.sig") == 0


# --------------------------------------------------------------------------------- lock file
def test_lock_file_is_never_deleted(token_file):
    storage = FileTokenStorage(token_file)
    lock = token_file.with_name("token.key.lock")
    storage.get_token(API_KEY, API_SECRET, CountingIssuer())
    assert lock.exists()
    inode = lock.stat().st_ino
    save(storage, "eyJ.b.sig")
    storage.invalidate_token(API_KEY, API_SECRET, "eyJ.b.sig")
    storage.get_token(API_KEY, API_SECRET, CountingIssuer())
    storage.delete_token(API_KEY, API_SECRET)
    storage.delete_token(API_KEY, API_SECRET)
    del storage
    assert lock.exists() and lock.stat().st_ino == inode


# ------------------------------------------------------------------------------ atomic writes
def test_saves_replace_the_file_and_leave_no_temp_files(token_file):
    storage = FileTokenStorage(token_file)
    save(storage, "eyJ.0.sig")
    inodes = {token_file.stat().st_ino}
    for i in range(1, 30):
        save(storage, f"eyJ.{i}.sig")
        inodes.add(token_file.stat().st_ino)
    assert len(inodes) > 1  # written by rename, never in place
    assert leftovers(token_file.parent) == []
    assert loaded_token(storage) == "eyJ.29.sig"


def test_failed_write_leaves_no_temp_file_and_keeps_the_token_in_memory(token_file, monkeypatch, caplog):
    storage = FileTokenStorage(token_file)
    save(storage, "eyJ.on-disk.sig")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_module.os, "fsync", full_disk)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert save(storage, "eyJ.memory-only.sig", lifetime=90000) is False
    monkeypatch.undo()
    assert any("No space left" in m for m in warnings_in(caplog))
    assert leftovers(token_file.parent) == []
    (entry,) = json.loads(token_file.read_bytes())["tokens"].values()  # the old file is intact
    assert entry["access_token"] == "eyJ.on-disk.sig"
    assert loaded_token(storage) == "eyJ.memory-only.sig"  # this process keeps the newer token
    # Once the disk recovers, the next save goes to disk.
    assert save(storage, "eyJ.back.sig", lifetime=95000) is True
    (entry,) = json.loads(token_file.read_bytes())["tokens"].values()
    assert entry["access_token"] == "eyJ.back.sig"
    assert loaded_token(FileTokenStorage(token_file)) == "eyJ.back.sig"


def test_readers_never_see_a_torn_file(token_file, caplog):
    writer_storage = FileTokenStorage(token_file)
    reader_storage = FileTokenStorage(token_file)  # its own instance: reads only the disk
    save(writer_storage, "eyJ.mock.sig", MOCK_KEY, MOCK_SECRET)
    save(writer_storage, "eyJ.w-start.sig")
    written = {"eyJ.w-start.sig"} | {f"eyJ.w-{i:03d}.sig" for i in range(200)}
    done = threading.Event()
    seen: list[str | None] = []
    problems: list[BaseException] = []

    def writer():
        try:
            for i in range(200):
                save(writer_storage, f"eyJ.w-{i:03d}.sig")
        except BaseException as exc:
            problems.append(exc)
        finally:
            done.set()

    def reader():
        try:
            while not done.is_set():
                seen.append(loaded_token(reader_storage))
                seen.append(loaded_token(reader_storage, MOCK_KEY, MOCK_SECRET))
        except BaseException as exc:
            problems.append(exc)

    with caplog.at_level(logging.WARNING, LOGGER):
        threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG)
            assert not t.is_alive()
    assert problems == []
    assert len(seen) > 10
    assert None not in seen  # never an empty, half-written or missing file
    assert set(seen) <= written | {"eyJ.mock.sig"}
    assert warnings_in(caplog) == []
    assert leftovers(token_file.parent) == []
    assert loaded_token(reader_storage) == "eyJ.w-199.sig"


# ------------------------------------------------------------------------------- several keys
def test_real_and_mock_keys_live_side_by_side(token_file):
    storage = FileTokenStorage(token_file)
    real, mock = CountingIssuer(), CountingIssuer(api_key=MOCK_KEY, api_secret=MOCK_SECRET)
    real_record = storage.get_token(API_KEY, API_SECRET, real)
    mock_record = storage.get_token(MOCK_KEY, MOCK_SECRET, mock)
    # Fresh instances (other processes) see both: neither evicted the other.
    other = FileTokenStorage(token_file)
    assert other.get_token(API_KEY, API_SECRET, real) == real_record
    assert other.get_token(MOCK_KEY, MOCK_SECRET, mock) == mock_record
    assert (real.calls, mock.calls) == (1, 1)
    document = json.loads(token_file.read_bytes())
    assert set(document["tokens"]) == {key_id(API_KEY), key_id(MOCK_KEY)}
    # Re-issuing one key keeps the other.
    save(storage, "eyJ.real-2.sig")
    assert loaded_token(other, MOCK_KEY, MOCK_SECRET) == mock_record.access_token
    assert loaded_token(other) == "eyJ.real-2.sig"


def test_delete_token_removes_only_that_key(token_file):
    storage = FileTokenStorage(token_file)
    save(storage, "eyJ.real.sig")
    save(storage, "eyJ.mock.sig", MOCK_KEY, MOCK_SECRET)
    assert storage.delete_token(API_KEY, API_SECRET) is True
    assert storage.delete_token(API_KEY, API_SECRET) is False
    assert loaded_token(storage) is None
    assert loaded_token(FileTokenStorage(token_file), MOCK_KEY, MOCK_SECRET) == "eyJ.mock.sig"
    assert storage.delete_token(MOCK_KEY, MOCK_SECRET) is True
    assert json.loads(token_file.read_bytes())["tokens"] == {}


def test_delete_token_on_a_missing_file(token_file):
    assert FileTokenStorage(token_file).delete_token(API_KEY, API_SECRET) is False


# -------------------------------------------------------------------------- compare-and-delete
def test_compare_and_delete_only_deletes_the_matching_token(token_file):
    storage = FileTokenStorage(token_file)
    save(storage, "eyJ.current.sig")
    save(storage, "eyJ.mock.sig", MOCK_KEY, MOCK_SECRET)
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.stale.sig") is False
    assert loaded_token(FileTokenStorage(token_file)) == "eyJ.current.sig"
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.mock.sig") is False  # another key's token
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.current.sig") is True
    assert loaded_token(FileTokenStorage(token_file)) is None
    assert loaded_token(FileTokenStorage(token_file), MOCK_KEY, MOCK_SECRET) == "eyJ.mock.sig"
    assert storage.invalidate_token(API_KEY, API_SECRET, "eyJ.current.sig") is False


def test_compare_and_delete_after_a_peer_replaced_the_token(token_file):
    mine, peer = FileTokenStorage(token_file), FileTokenStorage(token_file)
    dead = mine.get_token(API_KEY, API_SECRET, CountingIssuer())
    save(peer, "eyJ.fresh-from-peer.sig")
    # A late caller reporting the old dead token must not delete the peer's fresh one.
    assert mine.invalidate_token(API_KEY, API_SECRET, dead.access_token) is False
    issuer = CountingIssuer()
    assert mine.get_token(API_KEY, API_SECRET, issuer).access_token == "eyJ.fresh-from-peer.sig"
    assert issuer.calls == 0


# ---------------------------------------------------------------------------- secret rotation
def test_rotated_secret_does_not_get_the_old_token(token_file):
    storage = FileTokenStorage(token_file)
    old = storage.get_token(API_KEY, "the-old-secret", CountingIssuer(api_secret="the-old-secret", prefix="old"))
    assert storage.load_token(API_KEY, "the-new-secret") is None
    assert not storage.check_token_valid(API_KEY, "the-new-secret")
    issuer = CountingIssuer(api_secret="the-new-secret", prefix="new")
    new = FileTokenStorage(token_file).get_token(API_KEY, "the-new-secret", issuer)
    assert issuer.calls == 1 and new.access_token != old.access_token
    assert loaded_token(FileTokenStorage(token_file), API_KEY, "the-new-secret") == new.access_token
    assert FileTokenStorage(token_file).load_token(API_KEY, "the-old-secret") is None


# ----------------------------------------------------------------------------- damaged files
def _good_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good" / "token.key"
    save(FileTokenStorage(path), "eyJ.good.sig")
    return path.read_bytes()


def _entry(**change) -> dict:
    return {**make_record("eyJ.entry.sig").to_json(), **change}


DAMAGED: dict[str, object] = {
    "garbage": b"\x00\x01\xffnot a token file at all\xfe",
    "text": b"hello world",
    "empty": b"",
    "whitespace": b"  \n\t ",
    "invalid-utf8": b'{"format": "\xff\xfe"}',
    "json-null": b"null",
    "json-list": b"[1, 2, 3]",
    "json-string": b'"token"',
    "wrong-format": json.dumps({"format": "something-else", "tokens": {}}).encode(),
    "no-format": json.dumps({"tokens": {}}).encode(),
    "tokens-not-object": json.dumps({"format": FILE_FORMAT, "version": 1, "tokens": []}).encode(),
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "entry-not-object": json.dumps({"format": FILE_FORMAT, "tokens": {key_id(API_KEY): "x"}}).encode(),
    "entry-wrong-types": json.dumps(
        {"format": FILE_FORMAT, "tokens": {key_id(API_KEY): _entry(expires_at="soon")}}
    ).encode(),
    "entry-absurd-expiry": json.dumps(
        {"format": FILE_FORMAT, "tokens": {key_id(API_KEY): _entry(expires_at=1e20)}}
    ).encode(),
    "entry-huge-integer": json.dumps({"format": FILE_FORMAT, "tokens": {key_id(API_KEY): _entry(expires_at=0)}})
    .replace('"expires_at": 0', '"expires_at": ' + "9" * 500)
    .encode(),
    "entry-lone-surrogate": json.dumps(
        {"format": FILE_FORMAT, "tokens": {key_id(API_KEY): _entry(api_key="\ud800")}}
    ).encode(),
    "pickle-garbage": b"\x80\x04\x95garbage",
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_file_reads_as_no_token_and_is_replaced(token_file, caplog, name):
    token_file.parent.mkdir(mode=0o700)
    token_file.write_bytes(DAMAGED[name])  # type: ignore[arg-type]
    storage = FileTokenStorage(token_file)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert storage.load_token(API_KEY, API_SECRET) is None
        assert not storage.check_token_valid(API_KEY, API_SECRET)
    assert warnings_in(caplog), "a damaged file must be reported"
    assert all(API_SECRET not in m for m in warnings_in(caplog))
    issuer = CountingIssuer()
    record = storage.get_token(API_KEY, API_SECRET, issuer)
    assert issuer.calls == 1
    document = json.loads(token_file.read_bytes())
    assert document["format"] == FILE_FORMAT
    assert loaded_token(FileTokenStorage(token_file)) == record.access_token
    assert mode(token_file) == 0o600


def test_truncated_json_reads_as_no_token(tmp_path, token_file, caplog):
    good = _good_bytes(tmp_path)
    for cut in (1, len(good) // 3, len(good) // 2, len(good) - 1):
        token_file.parent.mkdir(mode=0o700, exist_ok=True)
        token_file.write_bytes(good[:cut])
        with caplog.at_level(logging.WARNING, LOGGER):
            assert FileTokenStorage(token_file).load_token(API_KEY, API_SECRET) is None
        assert warnings_in(caplog)
        caplog.clear()


def test_oversized_file_reads_as_no_token(tmp_path, token_file, caplog):
    good = _good_bytes(tmp_path)
    token_file.parent.mkdir(mode=0o700)
    token_file.write_bytes(good[:-1] + b" " * (MAX_FILE_BYTES + 1 - len(good)) + b"}")  # valid JSON, too big
    with caplog.at_level(logging.WARNING, LOGGER):
        assert FileTokenStorage(token_file).load_token(API_KEY, API_SECRET) is None
    assert any("larger than" in m for m in warnings_in(caplog))
    save(FileTokenStorage(token_file), "eyJ.small-again.sig")
    assert token_file.stat().st_size < 4096


def test_a_damaged_entry_does_not_hide_a_good_one(token_file, caplog):
    good = make_record("eyJ.good.sig", api_key=MOCK_KEY, api_secret=MOCK_SECRET)
    document = {
        "format": FILE_FORMAT,
        "version": 1,
        "tokens": {key_id(API_KEY): {"access_token": 5}, key_id(MOCK_KEY): good.to_json()},
    }
    token_file.parent.mkdir(mode=0o700)
    token_file.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING, LOGGER):
        storage = FileTokenStorage(token_file)
        assert loaded_token(storage, MOCK_KEY, MOCK_SECRET) == "eyJ.good.sig"
        assert loaded_token(storage) is None
    assert warnings_in(caplog)


@pytest.mark.parametrize("fingerprint", ["é" * 64, "\ud800" * 8, "0" * 64, "x"])
def test_a_forged_fingerprint_reads_as_not_ours(token_file, fingerprint):
    entry = {**make_record("eyJ.forged.sig").to_json(), "fingerprint": fingerprint}
    document = {"format": FILE_FORMAT, "version": 1, "tokens": {key_id(API_KEY): entry}}
    token_file.parent.mkdir(mode=0o700)
    token_file.write_text(json.dumps(document))
    storage = FileTokenStorage(token_file)
    assert loaded_token(storage) is None
    issuer = CountingIssuer()
    assert storage.get_token(API_KEY, API_SECRET, issuer).access_token != "eyJ.forged.sig"
    assert issuer.calls == 1


def test_an_entry_filed_under_another_key_is_ignored(token_file):
    # Copying another key's entry under our id must not hand out its token.
    entry = make_record("eyJ.someone-else.sig", api_key=MOCK_KEY, api_secret=API_SECRET).to_json()
    document = {"format": FILE_FORMAT, "version": 1, "tokens": {key_id(API_KEY): entry}}
    token_file.parent.mkdir(mode=0o700)
    token_file.write_text(json.dumps(document))
    assert loaded_token(FileTokenStorage(token_file)) is None


def test_a_directory_that_appears_in_place_of_the_file(token_file, caplog):
    # One there at construction is refused (tests/test_misconfiguration.py); one made later is survived.
    storage = FileTokenStorage(token_file)
    token_file.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert storage.load_token(API_KEY, API_SECRET) is None
        issuer = CountingIssuer()
        record = storage.get_token(API_KEY, API_SECRET, issuer)  # cannot be written: kept in memory
        assert storage.get_token(API_KEY, API_SECRET, issuer) == record
    assert issuer.calls == 1
    assert len(warnings_in(caplog)) >= 2  # the unreadable file, then the failed write
    assert token_file.is_dir()
    assert [n for n in os.listdir(token_file.parent) if n.endswith(".tmp")] == []


def test_a_symlink_is_not_followed_and_is_replaced(tmp_path, token_file, caplog):
    target = tmp_path / "elsewhere.json"
    good = _good_bytes(tmp_path)
    target.write_bytes(good)
    token_file.parent.mkdir(mode=0o700)
    token_file.symlink_to(target)
    storage = FileTokenStorage(token_file)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert storage.load_token(API_KEY, API_SECRET) is None
    assert any("symbolic link" in m for m in warnings_in(caplog))
    record = storage.get_token(API_KEY, API_SECRET, CountingIssuer())
    assert not token_file.is_symlink()
    assert target.read_bytes() == good  # the link's target was never written
    assert loaded_token(FileTokenStorage(token_file)) == record.access_token


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_a_fifo_in_place_of_the_file_does_not_hang(token_file, caplog):
    token_file.parent.mkdir(mode=0o700)
    os.mkfifo(token_file)
    outcome: list[object] = []

    def load():
        try:
            outcome.append(FileTokenStorage(token_file).load_token(API_KEY, API_SECRET))
        except BaseException as exc:
            outcome.append(exc)

    with caplog.at_level(logging.WARNING, LOGGER):
        t = threading.Thread(target=load, daemon=True)
        t.start()
        t.join(5)
    if t.is_alive():  # unblock the stuck open() so the thread can finish
        fd = os.open(token_file, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(10)
        pytest.fail("reading a FIFO token path blocked")
    assert outcome == [None]
    assert warnings_in(caplog)


def test_a_damaged_file_warns_once_per_instance(token_file, caplog):
    token_file.parent.mkdir(mode=0o700)
    token_file.write_bytes(b"garbage")
    storage = FileTokenStorage(token_file)
    with caplog.at_level(logging.WARNING, LOGGER):
        for _ in range(50):
            assert storage.load_token(API_KEY, API_SECRET) is None
    assert len(warnings_in(caplog)) == 1


def test_save_token_rejects_a_malformed_dict(token_file):
    with pytest.raises(ValueError):
        FileTokenStorage(token_file).save_token({"access_token": "x"})
    assert not token_file.exists()
