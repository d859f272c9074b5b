"""0.6.1 user code for the stock master files, against the fake master host over loopback HTTP.

``MasterFiles`` is what ``fetch_kospi_symbols`` / ``fetch_kosdaq_symbols`` /
``fetch_symbols`` use; ``download_master_file`` + ``parse_kospi_master`` are
0.6.1's lower-level calls.  The fake serves synthetic files in KIS's exact
layout (:mod:`korea_investment_stock.testing.masters`) and counts downloads.
"""

from __future__ import annotations

import gzip
import io
import multiprocessing
import os
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
from filelock import FileLock

from korea_investment_stock.errors import KoreaInvestmentError, MasterFileError
from korea_investment_stock.market import masters
from korea_investment_stock.market.masters import (
    KOSDAQ_LAYOUT,
    KOSDAQ_MASTER_PATH,
    KOSPI_LAYOUT,
    KOSPI_MASTER_PATH,
    MasterFiles,
    download_master_file,
    parse_kosdaq_master,
    parse_kospi_master,
)
from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.testing import masters as fake_masters
from tests.master_workers import symbols_worker

KOSPI_ZIP = "kospi_code.mst.zip"
KOSDAQ_ZIP = "kosdaq_code.mst.zip"


@pytest.fixture(autouse=True)
def _no_master_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(masters.ENV_MASTER_BASE_URL, raising=False)
    monkeypatch.delenv(masters.ENV_MASTER_CACHE_DIR, raising=False)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "masters"


def master_files(kis: FakeKIS, session: requests.Session, cache_dir: Path, **kwargs: object) -> MasterFiles:
    return MasterFiles(session, base_url=kis.url, cache_dir=cache_dir, **kwargs)  # type: ignore[arg-type]


def downloads(kis: FakeKIS) -> dict[str, int]:
    return kis.stats.master_downloads


def mst_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".mst")) if directory.exists() else []


# -- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("layout", "tail", "fields"), [(KOSPI_LAYOUT, 228, 70), (KOSDAQ_LAYOUT, 222, 64)])
def test_layout_widths_names_and_tail_length_agree(layout: masters.MasterLayout, tail: int, fields: int) -> None:
    assert len(layout.widths) == len(layout.names) == fields
    assert len(set(layout.names)) == fields
    # KIS's tail length counts the line end: the fields fill one character less.
    assert layout.tail_length == tail
    assert sum(layout.widths) + 1 == layout.tail_length == layout.record_width + 1
    assert layout.columns[:3] == ("단축코드", "표준코드", "한글명")
    assert layout.names[0] == "그룹코드" and layout.names[-1] == "대주가능"
    width = dict(zip(layout.names, layout.widths, strict=True))
    assert (width["그룹코드"], width["기준가"], width["전일거래량"], width["상장일자"]) == (2, 9, 12, 8)
    assert (width["상장주수"], width["자본금"], width["공모가"], width["그룹사코드"]) == (15, 21, 7, 3)


def test_synthetic_lines_have_the_real_shape() -> None:
    for market, layout in masters.LAYOUTS.items():
        for line in fake_masters.master_text(market).decode("cp949").splitlines():
            assert len(line) >= masters.FRONT_WIDTH + layout.record_width
        assert fake_masters.master_text(market) == fake_masters.master_text(market)  # deterministic


# -- parsed frames ----------------------------------------------------------------------------


def test_kospi_frame(fake_kis: FakeKIS, session: requests.Session, cache_dir: Path) -> None:
    frame = master_files(fake_kis, session, cache_dir).kospi()
    rows = fake_masters.kospi_rows()
    assert tuple(frame.columns) == KOSPI_LAYOUT.columns
    assert len(frame) == len(rows) > 300
    assert list(frame["단축코드"]) == [row.short_code for row in rows]
    assert list(frame["표준코드"]) == [row.standard_code for row in rows]
    assert list(frame["한글명"]) == [row.name.strip() for row in rows]
    by_code = frame.set_index("단축코드")
    samsung = by_code.loc["005930"]
    assert samsung["한글명"] == "삼성전자" and samsung["그룹코드"] == "ST" and samsung["표준코드"] == "KR7005930005"
    assert samsung["기준가"] == 71000 and samsung["상장일자"] == 19750611
    assert pd.api.types.is_integer_dtype(frame["기준가"]) and pd.api.types.is_integer_dtype(frame["상장일자"])
    assert isinstance(frame["단축코드"].iloc[1], str) and frame["단축코드"].iloc[1] == "000660"  # leading zeros kept
    assert by_code.loc["069500", "그룹코드"] == "EF" and by_code.loc["069500", "한글명"] == "KODEX 200"
    assert by_code.loc["0000J0", "한글명"] == "TIGER 미국 나스닥100 커버드콜(합성)"
    assert by_code.loc["330590", "그룹코드"] == "RT"
    assert by_code.loc["003550", "한글명"] == "LG"
    assert by_code.loc["009999", "한글명"] == "한국투자증권 ACE 미국빅테크TOP7 Plus레버리지(합성)"  # stripped
    assert by_code.loc["005930", "매매수량단위"] == 1 and by_code.loc["005930", "결산월"] == 12


def test_kosdaq_frame(fake_kis: FakeKIS, session: requests.Session, cache_dir: Path) -> None:
    frame = master_files(fake_kis, session, cache_dir).kosdaq()
    rows = fake_masters.kosdaq_rows()
    assert tuple(frame.columns) == KOSDAQ_LAYOUT.columns
    assert len(frame) == len(rows) > 200
    assert list(frame["단축코드"]) == [row.short_code for row in rows]
    by_code = frame.set_index("단축코드")
    assert by_code.loc["247540", "한글명"] == "에코프로비엠" and by_code.loc["247540", "기준가"] == 183000
    assert by_code.loc["000250", "한글명"] == "삼천당제약"  # leading zeros kept
    assert by_code.loc["446190", "SPAC"] == "Y" and by_code.loc["247540", "SPAC"] == "N"
    assert by_code.loc["900110", "그룹코드"] == "FS"
    assert pd.api.types.is_integer_dtype(frame["기준가"])
    assert frame["KOSDAQ150"].isin(["Y", "N"]).all()


def test_symbols_stacks_kospi_then_kosdaq(fake_kis: FakeKIS, session: requests.Session, cache_dir: Path) -> None:
    frame = master_files(fake_kis, session, cache_dir).symbols()
    kospi, kosdaq = fake_masters.kospi_rows(), fake_masters.kosdaq_rows()
    assert list(frame.columns) == ["단축코드", "한글명", "그룹코드", "시장"]
    assert len(frame) == len(kospi) + len(kosdaq)
    assert list(frame.index) == list(range(len(frame)))
    assert list(frame["시장"]) == ["코스피"] * len(kospi) + ["코스닥"] * len(kosdaq)
    assert list(frame["단축코드"]) == [r.short_code for r in kospi] + [r.short_code for r in kosdaq]
    assert frame.loc[0].to_dict() == {"단축코드": "005930", "한글명": "삼성전자", "그룹코드": "ST", "시장": "코스피"}
    assert frame.loc[len(kospi), "한글명"] == "에코프로비엠"
    assert downloads(fake_kis) == {KOSPI_ZIP: 1, KOSDAQ_ZIP: 1}


def test_line_endings_and_last_line_without_newline_parse_alike(tmp_path: Path) -> None:
    expected = parse_text(tmp_path / "lf", fake_masters.master_text("kospi"))
    crlf = parse_text(tmp_path / "crlf", fake_masters.master_text("kospi", line_end="\r\n"))
    unterminated = parse_text(tmp_path / "last", fake_masters.master_text("kospi").removesuffix(b"\n"))
    pd.testing.assert_frame_equal(expected, crlf)
    pd.testing.assert_frame_equal(expected, unterminated)


def parse_text(directory: Path, data: bytes) -> pd.DataFrame:
    directory.mkdir()
    (directory / "kospi_code.mst").write_bytes(data)
    return parse_kospi_master(directory)


def test_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MasterFileError, match="no master file"):
        parse_kosdaq_master(tmp_path)
    (tmp_path / "kosdaq_code.mst").write_bytes(b"")
    with pytest.raises(MasterFileError, match="no records"):
        parse_kosdaq_master(tmp_path)


# -- the daily cache --------------------------------------------------------------------------


def test_second_call_the_same_day_downloads_nothing(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path
) -> None:
    files = master_files(fake_kis, session, cache_dir)
    first = files.kospi()
    again = files.kospi()
    other_instance = master_files(fake_kis, session, cache_dir).kospi()  # as another process would
    assert downloads(fake_kis) == {KOSPI_ZIP: 1}
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, other_instance)
    again.loc[0, "한글명"] = "changed by the caller"
    assert files.kospi().loc[0, "한글명"] == "삼성전자"  # callers get copies
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert mst_files(cache_dir) == [f"kospi_code.{masters._today_kst()}.mst"]


def test_refresh_downloads_again(fake_kis: FakeKIS, session: requests.Session, cache_dir: Path) -> None:
    files = master_files(fake_kis, session, cache_dir)
    files.kospi()
    files.kospi(refresh=True)
    assert downloads(fake_kis) == {KOSPI_ZIP: 2}
    files.symbols(refresh=True)
    assert downloads(fake_kis) == {KOSPI_ZIP: 3, KOSDAQ_ZIP: 1}


def test_a_new_kst_day_downloads_again_and_drops_yesterday(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = master_files(fake_kis, session, cache_dir)
    monkeypatch.setattr(masters, "_today_kst", lambda: "20250102")
    files.kosdaq()
    files.kosdaq()
    monkeypatch.setattr(masters, "_today_kst", lambda: "20250103")
    assert len(files.kosdaq()) == len(fake_masters.kosdaq_rows())
    assert downloads(fake_kis) == {KOSDAQ_ZIP: 2}
    assert mst_files(cache_dir) == ["kosdaq_code.20250103.mst"]


def test_today_is_the_korean_calendar_day() -> None:
    from datetime import datetime, timedelta, timezone

    korea = datetime.now(timezone(timedelta(hours=9))).strftime("%Y%m%d")
    assert masters._today_kst() == korea or masters._today_kst() > korea  # equal unless midnight passed between


def test_a_damaged_cached_file_is_downloaded_again_once(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path
) -> None:
    files = master_files(fake_kis, session, cache_dir)
    files.kospi()
    cached = files.cached_path(KOSPI_LAYOUT)
    cached.write_bytes(b"\xff\xfe not a master file\n")
    fresh = master_files(fake_kis, session, cache_dir).kospi()
    assert len(fresh) == len(fake_masters.kospi_rows())
    assert downloads(fake_kis) == {KOSPI_ZIP: 2}
    assert cached.read_bytes() == fake_masters.master_text("kospi")


def test_concurrent_refreshers_share_one_download(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path
) -> None:
    master_files(fake_kis, session, cache_dir).kospi()
    fake_kis.set_master_fault("delay", delay=0.5)
    results: list[int] = []

    def refresh() -> None:
        results.append(len(master_files(fake_kis, requests.Session(), cache_dir).kospi(refresh=True)))

    leader = threading.Thread(target=refresh)
    leader.start()
    fake_kis.wait_for_stats(lambda s: s.master_downloads.get(KOSPI_ZIP) == 2, timeout=10)  # the leader holds the lock
    followers = [threading.Thread(target=refresh) for _ in range(5)]
    for thread in followers:
        thread.start()
    for thread in [leader, *followers]:
        thread.join(timeout=20)
    assert results == [len(fake_masters.kospi_rows())] * 6
    assert downloads(fake_kis) == {KOSPI_ZIP: 2}


def test_eight_processes_of_four_threads_download_each_file_once(fake_kis: FakeKIS, cache_dir: Path) -> None:
    fake_kis.set_master_fault("delay", times=None, delay=0.2)  # slow downloads keep the race window open
    processes, threads = 8, 4
    ctx = multiprocessing.get_context("spawn")  # clean children: no inherited locks or server threads
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=symbols_worker, args=(fake_kis.url, str(cache_dir), barrier, threads, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [outcome for _ in workers for outcome in results.get(timeout=90)[1]]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    errors = [outcome[1] for outcome in outcomes if outcome[0] == "error"]
    assert not errors, errors[0]
    expected = ("ok", len(fake_masters.kospi_rows()) + len(fake_masters.kosdaq_rows()), len(fake_masters.kospi_rows()))
    assert outcomes == [expected] * (processes * threads)
    assert downloads(fake_kis) == {KOSPI_ZIP: 1, KOSDAQ_ZIP: 1}
    assert all(worker.exitcode == 0 for worker in workers)


def test_an_unusable_cache_directory_still_answers_without_caching(
    fake_kis: FakeKIS, session: requests.Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    files = master_files(fake_kis, session, tmp_path / "a-file" / "masters")
    assert len(files.kosdaq()) == len(files.kosdaq()) == len(fake_masters.kosdaq_rows())
    assert downloads(fake_kis) == {KOSDAQ_ZIP: 2}
    assert "downloading without it" in caplog.text


def test_lock_waits_are_finite(fake_kis: FakeKIS, session: requests.Session, cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True)
    holder = FileLock(str(cache_dir / "kospi_code.mst.lock"))
    acquired, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread, so the kernel lock really excludes us
        with holder:
            acquired.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert acquired.wait(5)
        with pytest.raises(MasterFileError, match=r"waited 0s for .*kospi_code\.mst\.lock"):
            master_files(fake_kis, session, cache_dir, lock_timeout=0.2).kospi()
    finally:
        release.set()
        thread.join(10)
    assert downloads(fake_kis) == {}
    assert (cache_dir / "kospi_code.mst.lock").exists()


# -- bad downloads ----------------------------------------------------------------------------

BAD_ARCHIVES = {
    "http500": r"HTTP 500",
    "corrupt": r"corrupt or not a zip",
    "bad-crc": r"corrupt or not a zip \(BadZipFile\)",
    "zip-slip": r"'\.\./evil\.mst' escapes the target directory",
    "zip-absolute": r"escapes the target directory",
    "zip-symlink": r"is a symbolic link",
    "oversized": r"expands to 67108865 bytes, more than the 67108864 byte cap",
    "lying-header": r"corrupt or not a zip",
    "gzip-bomb": rf"decodes to more than the {masters.MAX_ARCHIVE_BYTES} byte cap",
}
BAD_CONTENTS = {
    "non-cp949": rf"line {fake_masters.BAD_CP949_LINE} is not valid cp949",
    "truncated": rf"truncated record at line {fake_masters.TRUNCATED_LINE}\b",
}


def assert_not_chained(error: BaseException) -> None:
    """No traceback of the HTTP or zip layer rides along (it could hold headers)."""
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def assert_nothing_escaped(tmp_path: Path) -> None:
    assert not any(p.name == "evil.mst" for p in tmp_path.rglob("*"))
    assert not Path(fake_masters.ABSOLUTE_MEMBER).exists()


@pytest.mark.parametrize("kind", [*BAD_ARCHIVES, *BAD_CONTENTS])
def test_a_bad_download_raises_and_touches_nothing(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path, tmp_path: Path, kind: str
) -> None:
    files = master_files(fake_kis, session, cache_dir)
    fake_kis.set_master_fault(kind, market="kospi")
    with pytest.raises(MasterFileError, match={**BAD_ARCHIVES, **BAD_CONTENTS}[kind]) as caught:
        files.kospi()
    assert isinstance(caught.value, KoreaInvestmentError) and isinstance(caught.value, ValueError)
    assert_not_chained(caught.value)
    assert mst_files(cache_dir) == []
    assert sorted(p.name for p in cache_dir.iterdir()) == ["kospi_code.mst.lock"]  # no temp files left
    assert_nothing_escaped(tmp_path)
    assert len(files.kospi()) == len(fake_masters.kospi_rows())  # the fault is spent: the next call works
    assert downloads(fake_kis) == {KOSPI_ZIP: 2}


@pytest.mark.parametrize("kind", list(BAD_ARCHIVES))
def test_download_master_file_refuses_bad_archives_before_writing(
    fake_kis: FakeKIS, session: requests.Session, tmp_path: Path, kind: str
) -> None:
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    fake_kis.set_master_fault(kind)
    with pytest.raises(MasterFileError, match=BAD_ARCHIVES[kind]):
        download_master_file(session, base_dir, KOSPI_ZIP, fake_kis.url + KOSPI_MASTER_PATH)
    assert list(base_dir.iterdir()) == []
    assert_nothing_escaped(tmp_path)


@pytest.mark.parametrize("kind", list(BAD_CONTENTS))
def test_parse_refuses_bad_contents_with_the_line_number(
    fake_kis: FakeKIS, session: requests.Session, tmp_path: Path, kind: str
) -> None:
    fake_kis.set_master_fault(kind)
    path = download_master_file(session, tmp_path, KOSPI_ZIP, fake_kis.url + KOSPI_MASTER_PATH)
    with pytest.raises(MasterFileError, match=BAD_CONTENTS[kind]) as caught:
        parse_kospi_master(tmp_path)
    assert str(path) in str(caught.value)


def test_an_unreachable_host_is_a_master_file_error(session: requests.Session, cache_dir: Path) -> None:
    with FakeKIS() as stopped:
        url = stopped.url
    files = MasterFiles(session, base_url=url, cache_dir=cache_dir, timeout=(1.0, 1.0))
    with pytest.raises(MasterFileError, match="ConnectionError") as caught:
        files.kosdaq()
    assert_not_chained(caught.value)
    assert mst_files(cache_dir) == []


def test_a_slow_host_times_out(fake_kis: FakeKIS, session: requests.Session, cache_dir: Path) -> None:
    fake_kis.set_master_fault("delay", delay=3.0)
    with pytest.raises(MasterFileError, match="ReadTimeout"):
        master_files(fake_kis, session, cache_dir, timeout=(1.0, 0.3)).kospi()


# -- content codings: the client asks for gzip, deflate -------------------------------------------


@pytest.mark.parametrize("encoding", fake_masters.MASTER_ENCODINGS)
def test_a_content_encoded_archive_is_decoded_and_parsed(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path, tmp_path: Path, encoding: str
) -> None:
    fake_kis.set_master_encoding(encoding)
    raw = session.get(fake_kis.url + KOSPI_MASTER_PATH, stream=True)  # what the wire carries
    assert raw.headers["Content-Encoding"] == encoding
    assert raw.raw.read(decode_content=False) == fake_masters.encode_body(fake_masters.master_zip("kospi"), encoding)
    files = master_files(fake_kis, session, cache_dir)
    assert files.kospi().equals(parse_text(tmp_path / "plain", fake_masters.master_text("kospi")))
    assert len(files.kosdaq()) == len(fake_masters.kosdaq_rows())
    path = download_master_file(session, tmp_path / "base", KOSPI_ZIP, fake_kis.url + KOSPI_MASTER_PATH)
    assert path.read_bytes() == fake_masters.master_text("kospi")


def test_a_gzip_bomb_is_refused_at_the_cap_without_decoding_it_all(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~64 KiB on the wire, 64 MiB decoded: with a 1 MiB cap, memory stays near 1 MiB, not 64."""
    monkeypatch.setattr(masters, "MAX_ARCHIVE_BYTES", 1 << 20)
    fake_masters.master_answer("kospi", fake_masters.MasterFault.GZIP_BOMB)  # built before measuring
    fake_kis.set_master_fault("gzip-bomb", market="kospi")
    tracemalloc.start()
    try:
        with pytest.raises(MasterFileError, match=r"decodes to more than the 1048576 byte cap") as caught:
            master_files(fake_kis, session, cache_dir).kospi()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes allocated while refusing a {fake_masters.GZIP_BOMB_BYTES} byte bomb"
    assert_not_chained(caught.value)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["kospi_code.mst.lock"]


def _encoded_download(body: bytes, coding: bytes, tmp_path: Path) -> tuple[Path, list[bytes]]:
    """``download_master_file`` from a host that sends ``body`` with ``Content-Encoding: coding``."""
    seen: list[bytes] = []
    url, thread = _serve_once([body], 0.0, len(body), b"Content-Encoding: " + coding + b"\r\n", seen)
    try:
        with requests.Session() as session:
            session.headers["Accept-Encoding"] = "br, zstd"  # codings we could not undo: never asked for
            return masters.download_master_file(session, tmp_path / "out", KOSPI_ZIP, url), seen
    finally:
        thread.join(10)


def _raw_deflate(data: bytes) -> bytes:
    encoder = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return encoder.compress(data) + encoder.flush()


def test_odd_but_valid_codings_are_decoded(tmp_path: Path) -> None:
    """Raw deflate (which some servers send for "deflate"), gzip in two members, x-gzip, identity."""
    archive = fake_masters.master_zip("kospi")
    half = len(archive) // 2
    bodies = {
        b"deflate": _raw_deflate(archive),
        b"gzip": gzip.compress(archive[:half], mtime=0) + gzip.compress(archive[half:], mtime=0),
        b"X-Gzip": gzip.compress(archive, mtime=0),
        b"identity": archive,
    }
    for number, (coding, body) in enumerate(bodies.items()):
        path, seen = _encoded_download(body, coding, tmp_path / str(number))
        assert path.read_bytes() == fake_masters.master_text("kospi"), coding
        assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in seen[0], seen[0]


@pytest.mark.parametrize(
    ("coding", "body", "error"),
    [
        (b"br", b"\x1b\x00", r"Content-Encoding 'br' was not asked for \(only gzip, deflate\)"),
        (b"gzip, gzip", b"", r"Content-Encoding 'gzip, gzip' was not asked for"),
        (b"gzip", gzip.compress(b"PK" * 1000)[:-8], r"the gzip body from .* is corrupt or cut short"),
        (b"gzip", gzip.compress(b"PK" * 1000) + b"trailing junk", r"the gzip body .* is corrupt or cut short"),
        (b"deflate", zlib.compress(b"PK" * 1000) + b"x", r"the deflate body .* is corrupt or cut short"),
        (b"gzip", b"not gzip at all", r"the gzip body .* is corrupt or cut short"),
    ],
    ids=["br", "two-codings", "cut-short", "gzip-junk", "deflate-junk", "not-gzip"],
)
def test_a_bad_coding_is_refused_before_writing(tmp_path: Path, coding: bytes, body: bytes, error: str) -> None:
    with pytest.raises(MasterFileError, match=error) as caught:
        _encoded_download(body, coding, tmp_path)
    assert_not_chained(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("coding", ["gzip", "deflate-zlib", "deflate-raw"])
def test_the_decoder_takes_the_body_a_byte_at_a_time(coding: str) -> None:
    """A dripping host hands read1 single bytes: deflate's format (zlib or raw) is told from two."""
    archive = fake_masters.master_zip("kospi")
    body = {
        "gzip": gzip.compress(archive),
        "deflate-zlib": zlib.compress(archive),
        "deflate-raw": _raw_deflate(archive),
    }
    decoder = masters._Decoder(coding.partition("-")[0], "http://host/kospi_code.mst.zip")
    decoded = b"".join(piece for at in range(len(body[coding])) for piece in decoder.decode(body[coding][at : at + 1]))
    decoder.finish()
    assert decoded == archive


#: A stream's header, then deflate blocks that decode to nothing: empty stored blocks (a sync flush each).
_STREAM_HEADS = {"gzip": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", "deflate": b"\x78\x9c"}
_EMPTY_BLOCK = b"\x00\x00\x00\xff\xff"


@pytest.mark.parametrize("coding", sorted(_STREAM_HEADS))
def test_a_body_that_decodes_to_nothing_is_refused_at_the_received_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, coding: str
) -> None:
    """The received bytes are counted per read however little they decode to.

    urllib3's decoding (2.6+) bounds what one read returns, not what it takes in: read1(amt,
    decode_content=True) reads on until something decodes, so this body went through one call whole,
    past the cap, and its DeflateDecoder kept all of it while trying the zlib format.
    """
    monkeypatch.setattr(masters, "MAX_ARCHIVE_BYTES", 1 << 20)
    parts = [_STREAM_HEADS[coding]] + [_EMPTY_BLOCK * 13107] * 96  # ~6 MiB, decoding to b""
    url, thread = _serve_once(parts, 0.0, None, f"Content-Encoding: {coding}\r\n".encode())  # no length to refuse
    tracemalloc.start()
    try:
        with pytest.raises(MasterFileError, match=r"the body is larger than the 1048576 byte cap") as caught:
            masters.download_master_file(requests.Session(), tmp_path / "out", KOSPI_ZIP, url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        thread.join(10)
    assert peak < 4 << 20, peak
    assert_not_chained(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("coding", sorted(_STREAM_HEADS))
def test_a_host_dripping_bytes_that_decode_to_nothing_cannot_hold_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, coding: str
) -> None:
    """The deadline is checked per read of the wire, not per decoded piece (urllib3's read1 with
    decode_content=True returned only when the drip ended, ~4 s here)."""
    monkeypatch.setattr(masters, "MAX_DOWNLOAD_SECONDS", 0.5)
    drip = [bytes([byte]) for byte in _EMPTY_BLOCK * 8]
    parts = [_STREAM_HEADS[coding], *drip]
    url, thread = _serve_once(parts, 0.1, sum(map(len, parts)), f"Content-Encoding: {coding}\r\n".encode())
    started = time.monotonic()
    with pytest.raises(MasterFileError, match="took longer"):
        masters.download_master_file(requests.Session(), tmp_path / "out", KOSPI_ZIP, url, timeout=(1, 1))
    assert time.monotonic() - started < 0.5 + 1.0 + 0.5  # the bound plus at most one read timeout
    thread.join(10)


def test_the_fake_encodes_only_for_clients_that_accept_it(fake_kis: FakeKIS) -> None:
    url = fake_kis.url + KOSPI_MASTER_PATH
    archive = fake_masters.master_zip("kospi")
    fake_kis.set_master_encoding("gzip")
    for accept, sent in [("gzip, deflate", "gzip"), ("*", "gzip"), ("identity", None), ("gzip;q=0, br", None)]:
        answer = requests.get(url, headers={"Accept-Encoding": accept}, stream=True, timeout=10)
        assert answer.headers.get("Content-Encoding") == sent, accept
        assert answer.content == archive  # requests decodes what it asked for
    fake_kis.set_master_encoding(None)
    assert "Content-Encoding" not in requests.get(url, timeout=10).headers
    with pytest.raises(ValueError, match="encoding must be one of"):
        fake_kis.set_master_encoding("br")
    control = requests.post(
        fake_kis.url + "/__fake__/control", json={"action": "set_master_encoding", "encoding": "deflate"}, timeout=10
    )
    assert control.json()["ok"] is True
    assert requests.get(url, timeout=10).headers["Content-Encoding"] == "deflate"
    with FakeKIS(master_encoding="gzip") as encoding:
        assert requests.get(encoding.url + KOSPI_MASTER_PATH, timeout=10).headers["Content-Encoding"] == "gzip"


# -- 0.6.1's lower-level calls ----------------------------------------------------------------


def test_download_and_parse_the_0_6_1_way_leave_the_working_directory_alone(
    fake_kis: FakeKIS, session: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    base_dir = tmp_path / "base" / "dir"  # created on demand
    kospi = download_master_file(session, base_dir, KOSPI_ZIP, fake_kis.url + KOSPI_MASTER_PATH)
    kosdaq = download_master_file(session, base_dir, KOSDAQ_ZIP, fake_kis.url + KOSDAQ_MASTER_PATH)
    assert (kospi, kosdaq) == (base_dir / "kospi_code.mst", base_dir / "kosdaq_code.mst")
    assert sorted(p.name for p in base_dir.iterdir()) == ["kosdaq_code.mst", "kospi_code.mst"]
    assert len(parse_kospi_master(base_dir)) == len(fake_masters.kospi_rows())
    assert len(parse_kosdaq_master(str(base_dir))) == len(fake_masters.kosdaq_rows())
    assert os.getcwd() == str(cwd)
    assert list(cwd.iterdir()) == []


# -- configuration and optional pandas --------------------------------------------------------


def test_base_url_and_cache_dir_precedence(
    session: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = MasterFiles(session)
    assert default.base_url == "https://new.real.download.dws.co.kr"
    assert default.url_for(KOSPI_LAYOUT) == "https://new.real.download.dws.co.kr/common/master/kospi_code.mst.zip"
    assert default.cache_dir == tmp_path / "home" / ".cache" / "kis" / "masters"
    monkeypatch.setenv("KOREA_INVESTMENT_MASTER_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("KOREA_INVESTMENT_MASTER_CACHE_DIR", str(tmp_path / "env"))
    from_env = MasterFiles(session)
    assert (from_env.base_url, from_env.cache_dir) == ("http://127.0.0.1:9", tmp_path / "env")
    explicit = MasterFiles(session, base_url="http://example.test", cache_dir=tmp_path / "arg")
    assert (explicit.base_url, explicit.cache_dir) == ("http://example.test", tmp_path / "arg")
    with pytest.raises(MasterFileError, match="http:// or https://"):
        MasterFiles(session, base_url="ftp://example.test")


def test_without_pandas_the_error_says_how_to_add_it(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    files = master_files(fake_kis, session, cache_dir)
    for call in (files.kospi, files.kosdaq, files.symbols, lambda: parse_kospi_master(tmp_path)):
        # pandas itself: the index's korea-investment-stock[pandas] would install another code base
        with pytest.raises(ImportError, match=r"pip install 'pandas>=1\.5'"):
            call()
    assert downloads(fake_kis) == {}


def test_importing_the_module_does_not_import_pandas_or_redis() -> None:
    code = (
        "import sys, korea_investment_stock.market.masters, korea_investment_stock.testing.masters\n"
        "assert 'pandas' not in sys.modules, 'pandas'\n"
        "assert 'redis' not in sys.modules, 'redis'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _serve_once(
    body_parts: list[bytes],
    pause: float,
    length: int | bytes | None,
    headers: bytes = b"",
    seen: list[bytes] | None = None,
) -> tuple[str, threading.Thread]:
    """A one-request HTTP server on loopback that sends ``body_parts`` with ``pause`` between them.

    ``length`` is the Content-Length (bytes: sent as they are, however odd; None: none, the body
    ends when the connection closes); ``headers`` are extra header lines (each ending in CRLF);
    the request's bytes go into ``seen``.
    """
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            request = conn.recv(65536)
            if seen is not None:
                seen.append(request)
            if length is None:
                framing = b"Connection: close\r\n"
            else:
                framing = b"Content-Length: %s\r\n" % (length if isinstance(length, bytes) else b"%d" % length)
            conn.sendall(b"HTTP/1.1 200 OK\r\n%s%s\r\n" % (framing, headers))
            for part in body_parts:
                try:
                    conn.sendall(part)
                except OSError:
                    return
                time.sleep(pause)  # the host's slowness is the fault under test
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/kospi_code.mst.zip", thread


def test_a_dripping_host_cannot_hold_the_download_past_its_bound(
    session: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(masters, "MAX_DOWNLOAD_SECONDS", 0.5)
    url, thread = _serve_once([b"x"] * 40, 0.1, 40)
    started = time.monotonic()
    with pytest.raises(MasterFileError, match="took longer"):
        masters.download_master_file(session, tmp_path / "out", "kospi_code.mst.zip", url, timeout=(1, 1))
    assert time.monotonic() - started < 0.5 + 1.0 + 0.5  # the bound plus at most one read timeout
    thread.join(10)


@pytest.mark.parametrize(
    ("declared", "outcome"),
    [
        (b"9" * 5000, r"declares more than the 33554432 byte cap \(a Content-Length of 5000 digits\)"),
        (b"0040000000", r"refusing .*: 40000000 bytes is more than the 33554432 byte cap"),
        (b"0" * 5000 + b"1", None),  # one byte, however written: the body is what counts
        ("\u00b2".encode("latin-1"), None),  # "²": str.isdigit() says yes, int() says no; HTTP says ignore it
    ],
    ids=["5000-digits", "over-the-cap", "leading-zeros", "superscript-two"],
)
def test_an_odd_content_length_is_a_master_file_error_or_ignored(
    session: requests.Session, tmp_path: Path, declared: bytes, outcome: str | None
) -> None:
    """The length check ran int() on any str.isdigit() header: past 4,300 digits, or on "²", that
    raised a bare ValueError out of the download instead of a MasterFileError."""
    body = fake_masters.master_zip("kospi")
    url, thread = _serve_once([body], 0.0, declared, b"Connection: close\r\n")
    try:
        if outcome is None:
            path = masters.download_master_file(session, tmp_path / "out", KOSPI_ZIP, url)
            assert path.read_bytes() == fake_masters.master_text("kospi")
        else:
            with pytest.raises(MasterFileError, match=outcome):
                masters.download_master_file(session, tmp_path / "out", KOSPI_ZIP, url)
            assert not (tmp_path / "out").exists()
    finally:
        thread.join(10)


def test_only_the_master_file_of_an_archive_is_written(session: requests.Session, tmp_path: Path) -> None:
    """An archive that also carries config.py must not drop it into base_dir (often 0.6.1's cwd)."""
    import zipfile as zf

    buffer = io.BytesIO()
    with zf.ZipFile(buffer, "w") as archive:
        archive.writestr("kospi_code.mst", fake_masters.master_text("kospi"))
        archive.writestr("config.py", b"print('planted')\n")
    body = buffer.getvalue()
    url, thread = _serve_once([body], 0.0, len(body))
    out = tmp_path / "out"
    path = masters.download_master_file(session, out, "kospi_code.mst.zip", url)
    assert sorted(p.name for p in out.iterdir()) == ["kospi_code.mst"] and path == out / "kospi_code.mst"
    thread.join(10)


def test_a_cache_directory_others_can_write_is_refused(
    fake_kis: FakeKIS, session: requests.Session, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(MasterFileError, match="can be written by other users"):
        MasterFiles(session, base_url=fake_kis.url, cache_dir=shared).kospi()
    assert fake_kis.stats.master_downloads == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_a_cached_file_of_another_user_is_not_trusted(
    fake_kis: FakeKIS, session: requests.Session, cache_dir: Path
) -> None:
    MasterFiles(session, base_url=fake_kis.url, cache_dir=cache_dir).kospi()
    (cached,) = cache_dir.glob("kospi_code.*.mst")
    os.chown(cached, 54321, -1)  # as if planted by someone else
    MasterFiles(session, base_url=fake_kis.url, cache_dir=cache_dir).kospi()
    assert fake_kis.stats.master_downloads["kospi_code.mst.zip"] == 2


def test_a_host_that_stalls_mid_body_is_a_master_file_error(tmp_path: Path) -> None:
    """A read timeout inside the body came out of urllib3 as its own exception, not ours."""
    from korea_investment_stock.transport import new_session

    url, thread = _serve_once([b"x" * 10, b"y"], 3.0, 11)  # the second part comes after the read timeout
    with new_session() as http, pytest.raises(MasterFileError, match="downloading .* failed"):
        masters.download_master_file(http, tmp_path / "out", "kospi_code.mst.zip", url, timeout=(1, 1))
    thread.join(10)


def test_a_host_that_trickles_its_headers_cannot_hold_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each header byte arrives within the read timeout; only a deadline on the whole call ends it."""
    from korea_investment_stock.transport import new_session
    from testsupport.trickle import TrickleServer, slow_headers

    monkeypatch.setattr(masters, "MAX_DOWNLOAD_SECONDS", 0.5)
    started = time.monotonic()
    with TrickleServer(slow_headers(), pace=0.25) as host, new_session() as http:  # 50 s for the headers
        with pytest.raises(MasterFileError, match="took longer"):
            masters.download_master_file(
                http, tmp_path / "out", "kospi_code.mst.zip", host.url("/kospi_code.mst.zip"), timeout=(1, 1)
            )
    assert time.monotonic() - started < 15.0  # a hang bound; the deadline is 3.5 s
