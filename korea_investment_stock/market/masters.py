"""KIS's stock master files (every listed KOSPI / KOSDAQ symbol), downloaded once a day.

Why this module exists: 0.6.1 downloaded both zips on every call, extracted
them into the working directory after ``chdir``-ing there, and trusted the
archive.  Here:

- Downloads are validated before anything touches the disk: no member may
  leave the target directory (zip slip), sizes are capped from the archive's
  own headers *and* while reading, and corrupt archives are refused.  On any
  refusal no file is created.
- A body sent with ``Content-Encoding: gzip`` or ``deflate`` (requests asks for
  both) is decoded here, piece by piece, and the body cap applies to the
  decoded bytes as they come: a gzip bomb is refused at the cap, never
  decoded whole into memory.
- :class:`MasterFiles` keeps one copy per market and KST calendar day in a
  cache directory shared by every process on the host, with one
  :class:`filelock.FileLock` per file: 50 processes at 08:00 download each
  file once, not 100 times.
- The ``.mst`` text is decoded strictly as cp949, line by line, so a damaged
  file fails loudly with its line number instead of yielding shifted columns.

pandas is optional (the ``pandas`` extra, or ``pip install 'pandas>=1.5'`` into the
same environment) and is imported only when a DataFrame is built.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import posixpath
import re
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias

import requests
import urllib3
from filelock import FileLock, Timeout

from .. import deadline
from ..errors import LockFileUnavailable, MasterCacheUnavailable, MasterFileError, UnsafeDirectory, UnsafeLockFile
from ..files import (
    check_private_directory,
    create_lock_file,
    fsync_directory,
)
from ..token.record import KST
from ..transport import DEFAULT_TIMEOUT, call_seconds
from ..validation import TimeoutSetting, check_seconds, check_timeout

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MASTER_BASE_URL",
    "ENV_MASTER_BASE_URL",
    "ENV_MASTER_CACHE_DIR",
    "FRONT_WIDTH",
    "KOSDAQ_LAYOUT",
    "KOSDAQ_MASTER_PATH",
    "KOSPI_LAYOUT",
    "KOSPI_MASTER_PATH",
    "LAYOUTS",
    "MAX_ARCHIVE_BYTES",
    "MAX_MEMBERS",
    "MAX_UNCOMPRESSED_BYTES",
    "PANDAS_HINT",
    "SYMBOL_COLUMNS",
    "MasterFiles",
    "MasterLayout",
    "download_master_file",
    "import_pandas",
    "parse_kosdaq_master",
    "parse_kospi_master",
    "parse_master",
]

logger = logging.getLogger(__name__)

#: ``pandas.DataFrame``.  Spelled ``Any`` so the package type-checks without pandas-stubs.
DataFrame: TypeAlias = Any

DEFAULT_MASTER_BASE_URL = "https://new.real.download.dws.co.kr"
KOSPI_MASTER_PATH = "/common/master/kospi_code.mst.zip"
KOSDAQ_MASTER_PATH = "/common/master/kosdaq_code.mst.zip"
ENV_MASTER_BASE_URL = "KOREA_INVESTMENT_MASTER_URL"
ENV_MASTER_CACHE_DIR = "KOREA_INVESTMENT_MASTER_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/kis/masters")
#: Not the index's korea-investment-stock[pandas]: that name there is another code base.
PANDAS_HINT = "pip install 'pandas>=1.5' into the same environment"

#: The real zips are a few hundred KiB; anything near these caps is not KIS's.
MAX_ARCHIVE_BYTES = 32 << 20
MAX_UNCOMPRESSED_BYTES = 64 << 20
MAX_MEMBERS = 16
#: A download is also bounded in total, not only per read (a server dripping bytes).
MAX_DOWNLOAD_SECONDS = 120.0
DEFAULT_LOCK_TIMEOUT = 60.0
LOCK_POLL_INTERVAL = 0.01
_CHUNK = 64 << 10

#: 단축코드 (9) + 표준코드 (12): the fixed part of the front; 한글명 follows, variable length.
FRONT_WIDTH = 21
SYMBOL_COLUMNS = ("단축코드", "한글명", "그룹코드", "시장")
_FRONT_COLUMNS = ("단축코드", "표준코드", "한글명")
_S_IFLNK = 0o120000


@dataclass(frozen=True)
class MasterLayout:
    """Where one market's file lives and how its fixed-width tail is cut.

    ``tail_length`` is the figure KIS's layout gives (228 / 222).  It counts the
    line end: the field widths sum to one less (:attr:`record_width`), which is
    the tail once the line end is stripped.  Slicing by ``record_width`` after
    stripping works for ``\\n``, ``\\r\\n`` and a last line without a newline.
    """

    market: str
    label: str
    file_name: str
    url_path: str
    tail_length: int
    widths: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.names):
            raise ValueError(f"{self.market}: {len(self.widths)} widths for {len(self.names)} names")
        if self.record_width + 1 != self.tail_length:
            raise ValueError(f"{self.market}: widths sum to {self.record_width}, layout says {self.tail_length} - 1")

    @property
    def record_width(self) -> int:
        """Characters of the tail without the line end."""
        return sum(self.widths)

    @property
    def zip_name(self) -> str:
        """The archive's name on the master host."""
        return posixpath.basename(self.url_path)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column of the parsed DataFrame, in order."""
        return _FRONT_COLUMNS + self.names


# Grouped in fives, as KIS's layout lists them.
# fmt: off
_KOSPI_WIDTHS = (
    2, 1, 4, 4, 4,  1, 1, 1, 1, 1,  1, 1, 1, 1, 1,  1, 1, 1, 1, 1,
    1, 1, 1, 1, 1,  1, 1, 1, 1, 1,  1, 9, 5, 5, 1,  1, 1, 2, 1, 1,
    1, 2, 2, 2, 3,  1, 3, 12, 12, 8,  15, 21, 2, 7, 1,  1, 1, 1, 1, 9,
    9, 9, 5, 9, 8,  9, 3, 1, 1, 1,
)
_KOSPI_NAMES = (
    "그룹코드", "시가총액규모", "지수업종대분류", "지수업종중분류", "지수업종소분류",
    "제조업", "저유동성", "지배구조지수종목", "KOSPI200섹터업종", "KOSPI100",
    "KOSPI50", "KRX", "ETP", "ELW발행", "KRX100",
    "KRX자동차", "KRX반도체", "KRX바이오", "KRX은행", "SPAC",
    "KRX에너지화학", "KRX철강", "단기과열", "KRX미디어통신", "KRX건설",
    "Non1", "KRX증권", "KRX선박", "KRX섹터_보험", "KRX섹터_운송",
    "SRI", "기준가", "매매수량단위", "시간외수량단위", "거래정지",
    "정리매매", "관리종목", "시장경고", "경고예고", "불성실공시",
    "우회상장", "락구분", "액면변경", "증자구분", "증거금비율",
    "신용가능", "신용기간", "전일거래량", "액면가", "상장일자",
    "상장주수", "자본금", "결산월", "공모가", "우선주",
    "공매도과열", "이상급등", "KRX300", "KOSPI", "매출액",
    "영업이익", "경상이익", "당기순이익", "ROE", "기준년월",
    "시가총액", "그룹사코드", "회사신용한도초과", "담보대출가능", "대주가능",
)
_KOSDAQ_WIDTHS = (
    2, 1, 4, 4, 4,  1, 1, 1, 1, 1,  1, 1, 1, 1, 1,  1, 1, 1, 1, 1,
    1, 1, 1, 1, 1,  1, 9, 5, 5, 1,  1, 1, 2, 1, 1,  1, 2, 2, 2, 3,
    1, 3, 12, 12, 8,  15, 21, 2, 7, 1,  1, 1, 1, 9, 9,  9, 5, 9, 8, 9,
    3, 1, 1, 1,
)
_KOSDAQ_NAMES = (
    "그룹코드", "시가총액규모", "지수업종대분류", "지수업종중분류", "지수업종소분류",
    "벤처기업", "저유동성", "KRX", "ETP", "KRX100",
    "KRX자동차", "KRX반도체", "KRX바이오", "KRX은행", "SPAC",
    "KRX에너지화학", "KRX철강", "단기과열", "KRX미디어통신", "KRX건설",
    "투자주의", "KRX증권", "KRX선박", "KRX섹터_보험", "KRX섹터_운송",
    "KOSDAQ150", "기준가", "매매수량단위", "시간외수량단위", "거래정지",
    "정리매매", "관리종목", "시장경고", "경고예고", "불성실공시",
    "우회상장", "락구분", "액면변경", "증자구분", "증거금비율",
    "신용가능", "신용기간", "전일거래량", "액면가", "상장일자",
    "상장주수", "자본금", "결산월", "공모가", "우선주",
    "공매도과열", "이상급등", "KRX300", "매출액", "영업이익",
    "경상이익", "당기순이익", "ROE", "기준년월", "시가총액",
    "그룹사코드", "회사신용한도초과", "담보대출가능", "대주가능",
)
# fmt: on

KOSPI_LAYOUT = MasterLayout("kospi", "코스피", "kospi_code.mst", KOSPI_MASTER_PATH, 228, _KOSPI_WIDTHS, _KOSPI_NAMES)
KOSDAQ_LAYOUT = MasterLayout(
    "kosdaq", "코스닥", "kosdaq_code.mst", KOSDAQ_MASTER_PATH, 222, _KOSDAQ_WIDTHS, _KOSDAQ_NAMES
)
LAYOUTS: Mapping[str, MasterLayout] = {"kospi": KOSPI_LAYOUT, "kosdaq": KOSDAQ_LAYOUT}


def import_pandas() -> ModuleType:
    """pandas, imported on first use: the rest of the library must work without it."""
    try:
        return importlib.import_module("pandas")
    except ImportError as exc:
        raise ImportError(f"the KIS symbol master files are returned as pandas DataFrames: {PANDAS_HINT}") from exc


def _today_kst() -> str:
    """Today in Korea as ``YYYYMMDD``: KIS publishes new files per KST day (tests patch this)."""
    return datetime.now(KST).strftime("%Y%m%d")


# ---------------------------------------------------------------------------- parsing


def parse_master(path: str | os.PathLike[str], layout: MasterLayout) -> DataFrame:
    """Parse one extracted ``.mst`` file into a DataFrame (one row per line)."""
    pd = import_pandas()
    source = Path(path)
    return _parse_bytes(pd, _read_capped_file(source), layout, str(source))


def parse_kospi_master(base_dir: str | os.PathLike[str]) -> DataFrame:
    """``base_dir/kospi_code.mst`` as a DataFrame (0.6.1's name and argument)."""
    return parse_master(Path(base_dir) / KOSPI_LAYOUT.file_name, KOSPI_LAYOUT)


def parse_kosdaq_master(base_dir: str | os.PathLike[str]) -> DataFrame:
    """``base_dir/kosdaq_code.mst`` as a DataFrame (0.6.1's name and argument)."""
    return parse_master(Path(base_dir) / KOSDAQ_LAYOUT.file_name, KOSDAQ_LAYOUT)


def _read_capped_file(path: Path, *, ours: bool = False) -> bytes:
    """The file's bytes, refusing non-regular files, anything over the cap and (``ours``) other users' files."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MasterFileError(f"no master file at {path}; download it first") from None
    except OSError as exc:
        raise MasterFileError(f"cannot open the master file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MasterFileError(f"the master file {path} is not a regular file")
        if ours and info.st_uid != os.geteuid():
            raise MasterFileError(f"the cached master file {path} belongs to another user (uid {info.st_uid})")
        data = handle.read(MAX_UNCOMPRESSED_BYTES + 1)
    if len(data) > MAX_UNCOMPRESSED_BYTES:
        raise MasterFileError(f"the master file {path} is larger than {MAX_UNCOMPRESSED_BYTES} bytes")
    return data


def _parse_bytes(pd: ModuleType, data: bytes, layout: MasterLayout, source: str) -> DataFrame:
    """Front columns as str, tail columns through ``read_fwf`` (0.6.1's numeric inference)."""
    shorts, standards, names, tails = _split_records(data, layout, source)
    front = pd.DataFrame({"단축코드": shorts, "표준코드": standards, "한글명": names})
    tail = pd.read_fwf(
        io.StringIO("\n".join(tails)),
        widths=list(layout.widths),
        names=list(layout.names),
        header=None,
        skip_blank_lines=False,
    )
    if len(tail) != len(front):
        raise MasterFileError(f"{source}: {len(front)} records but {len(tail)} parsed tails")
    return pd.concat([front, tail], axis=1)


def _split_records(data: bytes, layout: MasterLayout, source: str) -> tuple[list[str], ...]:
    """Decode and cut every line; the first bad line raises, so there is no partial result."""
    lines = data.split(b"\n")  # safe on cp949 bytes: 0x0A is never part of a double-byte character
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise MasterFileError(f"{source}: the master file has no records")
    columns: tuple[list[str], ...] = ([], [], [], [])
    minimum = FRONT_WIDTH + layout.record_width
    for number, raw in enumerate(lines, start=1):
        text = _decode_line(raw, source, number).removesuffix("\r")
        if len(text) < minimum:
            raise MasterFileError(
                f"{source}: truncated record at line {number} ({len(text)} characters, at least {minimum} expected)"
            )
        front, tail = text[: -layout.record_width], text[-layout.record_width :]
        for column, value in zip(
            columns, (front[:9].rstrip(), front[9:21].rstrip(), front[21:].strip(), tail), strict=True
        ):
            column.append(value)
    return columns


def _decode_line(raw: bytes, source: str, number: int) -> str:
    try:
        return raw.decode("cp949")
    except UnicodeDecodeError as exc:
        raise MasterFileError(
            f"{source}: line {number} is not valid cp949 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


# ---------------------------------------------------------------------------- downloading


def download_master_file(
    session: requests.Session,
    base_dir: str | os.PathLike[str],
    file_name: str,
    url: str,
    *,
    timeout: TimeoutSetting = DEFAULT_TIMEOUT,
) -> Path:
    """Download the zip at ``url`` and extract its members into ``base_dir``; return the ``.mst``.

    ``file_name`` is the archive's name (``kospi_code.mst.zip``); the member
    named like it without ``.zip`` is the one returned.  The whole archive is
    validated in memory first, so a refused one creates no file; members are
    written to temp files in ``base_dir`` and renamed into place.  The
    working directory is neither used nor changed.
    """
    members = _unpack(_fetch(session, url, check_timeout(timeout)), url)
    target = _expected_member(members, file_name, url)
    directory = Path(base_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MasterFileError(f"cannot create {directory}: {exc.strerror or exc}") from None
    _write_members(directory, {target: members[target]})  # only the .mst: nothing else lands in base_dir
    return directory / target


def _expected_member(members: Mapping[str, bytes], file_name: str, url: str) -> str:
    """The ``.mst`` the caller asked for, or the only member of a one-file archive."""
    wanted = posixpath.basename(file_name).removesuffix(".zip")
    if wanted in members and wanted.endswith(".mst"):
        return wanted
    if len(members) == 1 and next(iter(members)).endswith(".mst"):
        return next(iter(members))
    raise MasterFileError(f"the archive from {url} has no member {wanted!r} (members: {sorted(members)})")


#: The content codings a download may arrive in, and so the ones asked for.  ``identity`` is none.
ACCEPT_ENCODING = "gzip, deflate"
_GZIP_CODINGS = ("gzip", "x-gzip")


def _fetch(session: requests.Session, url: str, timeout: tuple[float, float]) -> bytes:
    """The response body, decoded and capped; every failure is a MasterFileError without a chained traceback.

    The whole call, headers included, has a deadline (:mod:`..deadline`): the body loop
    checks its own between reads, but a host can trickle its headers, or one read, too.
    """
    total = call_seconds(timeout) + MAX_DOWNLOAD_SECONDS
    with deadline.bounded(total) as call:
        try:
            # Our own Accept-Encoding: the session's may name codings (br, zstd) that _Decoder cannot undo.
            headers = {"Accept-Encoding": ACCEPT_ENCODING}
            with session.get(url, timeout=timeout, stream=True, headers=headers) as response:
                if response.status_code != 200:
                    raise MasterFileError(f"downloading {url} failed: HTTP {response.status_code}")
                body = _read_body(response, url)
            if call.expired:  # cut mid-headers, http.client may see a short but "complete" answer
                raise MasterFileError(f"downloading {url} took longer than {total:.0f}s")
            return body
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, MasterFileError) as exc:
            # A read cut by the deadline may end as anything: a reset, a short body, a bad archive.
            if call.expired:
                raise MasterFileError(f"downloading {url} took longer than {total:.0f}s") from None
            if isinstance(exc, MasterFileError):
                raise
            raise MasterFileError(f"downloading {url} failed: {type(exc).__name__}; check the network") from None


def _read_body(response: requests.Response, url: str) -> bytes:
    """The body as the server meant it: read raw, decoded here, capped before and after decoding."""
    _check_declared_length(response.headers.get("Content-Length", ""), url)
    decoder = _Decoder(response.headers.get("Content-Encoding", ""), url)
    # The read timeout bounds each read, not the whole body: a host that drips a byte at a
    # time would hold the file lock for ever.  read1 returns whatever has arrived, so the
    # deadline is checked at least once per read timeout.  Both read the bytes as sent
    # (decode_content=False) and _Decoder decodes them, so the caps see every byte received and
    # every decoded piece, and the deadline every read, however little a read decodes to.
    deadline = time.monotonic() + MAX_DOWNLOAD_SECONDS
    read1 = getattr(response.raw, "read1", None)
    if read1 is not None:
        pieces: Iterator[bytes] = iter(lambda: read1(_CHUNK, decode_content=False), b"")
    else:  # urllib3 1.26
        pieces = response.raw.stream(_CHUNK, decode_content=False)
    chunks: list[bytes] = []
    received = total = 0
    for chunk in pieces:
        received += len(chunk)
        if received > MAX_ARCHIVE_BYTES:
            raise MasterFileError(f"refusing {url}: the body is larger than the {MAX_ARCHIVE_BYTES} byte cap")
        for piece in decoder.decode(chunk):
            total += len(piece)
            if total > MAX_ARCHIVE_BYTES:
                raise MasterFileError(
                    f"refusing {url}: the {decoder.coding} body decodes to more than the {MAX_ARCHIVE_BYTES} byte cap"
                )
            chunks.append(piece)
        if time.monotonic() > deadline:
            raise MasterFileError(f"downloading {url} took longer than {MAX_DOWNLOAD_SECONDS:.0f}s")
    decoder.finish()
    return b"".join(chunks)


def _check_declared_length(declared: str, url: str) -> None:
    """Refuse a body that announces more than the cap; a length that is no number is ignored.

    Compared as text first: ``int()`` refuses more than 4,300 digits, and ``str.isdigit``
    admits digits that ``int()`` does not parse ("²").  The streaming cap still applies
    whatever the header says, so ignoring a malformed one (as http.client does) is safe.
    """
    declared = declared.strip()
    if not (declared.isascii() and declared.isdigit()):
        return
    digits = declared.lstrip("0") or "0"
    if len(digits) > len(str(MAX_ARCHIVE_BYTES)):
        raise MasterFileError(
            f"refusing {url}: it declares more than the {MAX_ARCHIVE_BYTES} byte cap "
            f"(a Content-Length of {len(declared)} digits)"
        )
    if int(digits) > MAX_ARCHIVE_BYTES:
        raise MasterFileError(f"refusing {url}: {digits} bytes is more than the {MAX_ARCHIVE_BYTES} byte cap")


class _Decoder:
    """Undo one content coding (``gzip``, ``deflate`` or none), yielding at most ``_CHUNK`` bytes at a time.

    Why our own and not urllib3's: since 2.6 urllib3 bounds what one decoding
    read returns, not what it reads.  ``read1``/``read``/``stream`` with
    ``decode_content=True`` read on until something decodes, so bytes that
    decode to nothing (empty deflate blocks, a gzip comment) pass the received
    cap and the download deadline inside one call, and its ``DeflateDecoder``
    keeps all of them while it tries the zlib format (2.8).  Before 2.6, which
    requests 2.28+ still allows, it also decoded a whole read at once.  Here the
    bytes are read as sent, so both checks run per read of the wire, and
    ``decompress(..., max_length)`` hands the caller one chunk at a time, keeping
    the rest of the input for later.  A stream that ends early (no gzip trailer)
    or has bytes after its end is refused: the zip check would catch most such
    damage, but not all.
    """

    def __init__(self, header: str, url: str) -> None:
        codings = [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in (*_GZIP_CODINGS, "deflate")):
            raise MasterFileError(
                f"refusing {url}: Content-Encoding {header.strip()!r} was not asked for (only {ACCEPT_ENCODING})"
            )
        self.coding = codings[0] if codings else "identity"
        self.url = url
        self._stream: Any = None  # a zlib decompressobj, made when the first bytes show the format
        self._head = b""  # deflate: the first byte, while the second (zlib or raw?) has not arrived

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most ``_CHUNK``."""
        if self.coding == "identity":
            yield data
            return
        if self._stream is None and self.coding == "deflate" and len(self._head + data) < 2:
            self._head += data
            return
        data, self._head = self._head + data, b""
        try:
            while data:
                stream = self._start(data) if self._stream is None or self._stream.eof else self._stream
                while True:
                    piece = stream.decompress(data, _CHUNK)
                    data = stream.unconsumed_tail
                    if piece:
                        yield piece
                    # A piece shorter than asked means zlib used up the input and holds nothing back.
                    if stream.eof or (not data and len(piece) < _CHUNK):
                        break
                data = stream.unused_data if stream.eof else b""
        except zlib.error:
            raise self._corrupt() from None

    def _start(self, data: bytes) -> Any:
        """A decompressor for the stream ``data`` begins; gzip allows members one after another, deflate not."""
        if self._stream is not None and self.coding == "deflate":
            raise self._corrupt()  # bytes after the end of the stream
        if self.coding in _GZIP_CODINGS:
            self._stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
            self._stream = zlib.decompressobj(zlib.MAX_WBITS)  # deflate as RFC 9110 says: zlib format
        else:
            self._stream = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send it
        return self._stream

    def finish(self) -> None:
        """Refuse a body that ended inside the stream (a cut-off download)."""
        if self.coding != "identity" and (self._stream is None or not self._stream.eof):
            raise self._corrupt()

    def _corrupt(self) -> MasterFileError:
        return MasterFileError(f"the {self.coding} body from {self.url} is corrupt or cut short")


def _unpack(archive: bytes, url: str) -> dict[str, bytes]:
    """Every member's bytes, after checking names and sizes; nothing is written here."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            infos = zf.infolist()
            _check_members(infos, url)
            budget = MAX_UNCOMPRESSED_BYTES
            members: dict[str, bytes] = {}
            for info in infos:
                members[info.filename] = _read_member(zf, info, budget, url)
                budget -= len(members[info.filename])
            return members
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        if isinstance(exc, MasterFileError):
            raise
        raise MasterFileError(f"the archive from {url} is corrupt or not a zip ({type(exc).__name__})") from None


def _check_members(infos: list[zipfile.ZipInfo], url: str) -> None:
    """Refuse before extracting: escaping paths, links, directories, encryption, size claims."""
    if not infos:
        raise MasterFileError(f"the archive from {url} is empty")
    if len(infos) > MAX_MEMBERS:
        raise MasterFileError(f"the archive from {url} has {len(infos)} members; KIS publishes one")
    seen: set[str] = set()
    for info in infos:
        _check_member_name(info, url)
        if info.filename in seen:
            raise MasterFileError(f"the archive from {url} holds {info.filename!r} twice")
        seen.add(info.filename)
    declared = sum(info.file_size for info in infos)
    if declared > MAX_UNCOMPRESSED_BYTES:
        raise MasterFileError(
            f"refusing the archive from {url}: it expands to {declared} bytes, "
            f"more than the {MAX_UNCOMPRESSED_BYTES} byte cap"
        )


def _check_member_name(info: zipfile.ZipInfo, url: str) -> None:
    name = info.filename
    normalized = posixpath.normpath(name.replace("\\", "/"))
    if normalized.startswith(("/", "../")) or normalized == ".." or re.match(r"^[A-Za-z]:", normalized):
        raise MasterFileError(f"refusing the archive from {url}: member {name!r} escapes the target directory")
    if (info.external_attr >> 16) & 0o170000 == _S_IFLNK:
        raise MasterFileError(f"refusing the archive from {url}: member {name!r} is a symbolic link")
    if info.is_dir() or "/" in normalized or normalized != name or name in ("", "."):
        raise MasterFileError(f"refusing the archive from {url}: member {name!r} is not a plain file at the top level")
    if info.flag_bits & 0x1:
        raise MasterFileError(f"refusing the archive from {url}: member {name!r} is encrypted")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, url: str) -> bytes:
    """Read one member in chunks, stopping at the budget whatever its header claims."""
    chunks: list[bytes] = []
    total = 0
    with zf.open(info) as handle:  # verifies the CRC at the end: a mismatch raises BadZipFile
        while chunk := handle.read(_CHUNK):
            total += len(chunk)
            if total > budget:
                raise MasterFileError(f"refusing the archive from {url}: it expands beyond the byte cap")
            chunks.append(chunk)
    return b"".join(chunks)


def _write_members(directory: Path, members: Mapping[str, bytes]) -> None:
    """Write every member to a temp file, then rename all into place (no half-written files)."""
    temps: dict[str, str] = {}
    try:
        for name, data in members.items():
            temps[name] = _write_temp(directory, f".{name}.", data)
        for name, temp in list(temps.items()):
            os.replace(temp, directory / name)
            del temps[name]
        fsync_directory(directory)
    except OSError as exc:
        raise MasterFileError(f"cannot write into {directory}: {exc.strerror or exc}") from None
    finally:
        for temp in temps.values():
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _write_temp(directory: Path, prefix: str, data: bytes) -> str:
    """A fsynced temp file (0600) in ``directory``; the caller renames or removes it."""
    fd, temp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


# ---------------------------------------------------------------------------- the shared daily cache

_Signature: TypeAlias = tuple[int, int, int]


class MasterFiles:
    """The KOSPI / KOSDAQ master files, downloaded at most once per KST day per host.

    Args:
        session: the ``requests.Session`` downloads go through (the master
            host needs no authentication).
        base_url: the master host; default ``$KOREA_INVESTMENT_MASTER_URL``,
            else :data:`DEFAULT_MASTER_BASE_URL`.
        cache_dir: where the day's files and their lock files live; default
            ``$KOREA_INVESTMENT_MASTER_CACHE_DIR``, else ``~/.cache/kis/masters``.
            Created 0700.
        timeout: ``(connect, read)`` seconds for each download.
        lock_timeout: how long to wait for another process's download.

    Readers take no lock when today's file is there; a miss takes the file's
    lock, checks again and downloads.  ``refresh=True`` forces a download,
    but callers that were already waiting share the one in progress.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        base_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: TimeoutSetting = DEFAULT_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.session = session
        self.base_url = _resolve_base_url(base_url)
        self.cache_dir = _resolve_cache_dir(cache_dir)
        self.timeout = check_timeout(timeout)
        self.lock_timeout = check_seconds("lock_timeout", lock_timeout)
        self._locks: dict[str, FileLock] = {}
        self._lock_pid = os.getpid()
        self._guard = threading.Lock()
        #: Per market: (path, signature, frame) of the last file this instance parsed.
        self._memo: dict[str, tuple[str, _Signature, DataFrame]] = {}

    def __repr__(self) -> str:
        return f"MasterFiles(base_url={self.base_url!r}, cache_dir={str(self.cache_dir)!r})"

    def kospi(self, refresh: bool = False) -> DataFrame:
        """Every KOSPI symbol: 단축코드, 표준코드, 한글명, then the KOSPI tail columns."""
        return self._load(KOSPI_LAYOUT, refresh)

    def kosdaq(self, refresh: bool = False) -> DataFrame:
        """Every KOSDAQ symbol: 단축코드, 표준코드, 한글명, then the KOSDAQ tail columns."""
        return self._load(KOSDAQ_LAYOUT, refresh)

    def symbols(self, refresh: bool = False) -> DataFrame:
        """Both markets stacked, KOSPI first: 단축코드, 한글명, 그룹코드, 시장 (코스피 / 코스닥)."""
        pd = import_pandas()
        parts = [
            frame[list(SYMBOL_COLUMNS[:3])].assign(시장=layout.label)
            for layout, frame in ((KOSPI_LAYOUT, self.kospi(refresh)), (KOSDAQ_LAYOUT, self.kosdaq(refresh)))
        ]
        return pd.concat(parts, ignore_index=True)

    def url_for(self, layout: MasterLayout) -> str:
        """The archive's URL on the configured host."""
        return self.base_url + layout.url_path

    def cached_path(self, layout: MasterLayout, day: str | None = None) -> Path:
        """Where the file for ``day`` (default: today in KST) is cached."""
        stem = layout.file_name.removesuffix(".mst")
        return self.cache_dir / f"{stem}.{day or _today_kst()}.mst"

    # -------------------------------------------------------------- the flow

    def _load(self, layout: MasterLayout, refresh: bool) -> DataFrame:
        pd = import_pandas()
        path = self.cached_path(layout)
        seen = _signature(path)
        if seen is not None and not refresh:
            frame = self._cached_frame(pd, path, seen, layout)
            if frame is not None:
                return frame
        try:
            lock = self._lock_for(self.cache_dir / f"{layout.file_name}.lock")
        except MasterCacheUnavailable as exc:
            logger.warning("cannot use the master cache %s (%s); downloading without it", self.cache_dir, exc)
            return self._download(pd, layout)[1]
        with self._held(lock, layout):
            return self._load_locked(pd, layout, path, seen)

    def _load_locked(self, pd: ModuleType, layout: MasterLayout, path: Path, seen: _Signature | None) -> DataFrame:
        """Under the file's lock: use a file a peer wrote while we waited, else download."""
        current = _signature(path)
        if current is not None and current != seen:
            frame = self._cached_frame(pd, path, current, layout)
            if frame is not None:
                return frame
        data, frame = self._download(pd, layout)
        stored = self._store(path, data, layout)
        if stored is not None:
            self._memo[layout.market] = (str(path), stored, frame)
        return frame.copy()

    def _cached_frame(self, pd: ModuleType, path: Path, sig: _Signature, layout: MasterLayout) -> DataFrame | None:
        """The parsed cache file, or None when it vanished or is damaged (then it is downloaded)."""
        memo = self._memo.get(layout.market)
        if memo is not None and memo[:2] == (str(path), sig):
            return memo[2].copy()
        try:
            frame = _parse_bytes(pd, _read_capped_file(path, ours=True), layout, str(path))
        except MasterFileError as exc:
            if _signature(path) is not None:
                logger.warning("the cached master file is damaged (%s); downloading it again", exc)
            return None
        self._memo[layout.market] = (str(path), sig, frame)
        return frame.copy()

    def _download(self, pd: ModuleType, layout: MasterLayout) -> tuple[bytes, DataFrame]:
        """Fetch, validate and parse in memory: nothing reaches the cache unless it parses."""
        url = self.url_for(layout)
        members = _unpack(_fetch(self.session, url, self.timeout), url)
        data = members.get(layout.file_name)
        if data is None:
            raise MasterFileError(f"the archive from {url} has no {layout.file_name} (members: {sorted(members)})")
        return data, _parse_bytes(pd, data, layout, f"{layout.file_name} from {url}")

    def _store(self, path: Path, data: bytes, layout: MasterLayout) -> _Signature | None:
        """Atomically install today's file, drop other days' (lock held); a full disk only warns."""
        try:
            temp = _write_temp(self.cache_dir, f".cache-{layout.market}.", data)
            try:
                os.replace(temp, path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            fsync_directory(self.cache_dir)
        except OSError as exc:
            logger.warning("cannot write the master cache %s (%s)", path, exc.strerror or exc)
            return None
        self._prune(layout, keep=path)
        return _signature(path)

    def _prune(self, layout: MasterLayout, keep: Path) -> None:
        """Remove other days' copies and temp files of dead writers: only lock holders write them."""
        stem = re.escape(layout.file_name.removesuffix(".mst"))
        pattern = re.compile(rf"^(?:{stem}\.\d{{8}}\.mst|\.cache-{re.escape(layout.market)}\..*\.tmp)$")
        for entry in self._entries():
            if pattern.match(entry.name) and entry != keep:
                with contextlib.suppress(OSError):
                    entry.unlink()

    def _entries(self) -> Iterator[Path]:
        try:
            yield from self.cache_dir.iterdir()
        except OSError:
            return

    # -------------------------------------------------------------- locking

    @contextlib.contextmanager
    def _held(self, lock: FileLock, layout: MasterLayout) -> Iterator[None]:
        """Hold ``<file>.lock`` for one check-download-install; every wait is finite."""
        try:
            lock.acquire(timeout=self.lock_timeout, poll_interval=LOCK_POLL_INTERVAL)
        except Timeout:
            raise MasterFileError(
                f"waited {self.lock_timeout:.0f}s for {lock.lock_file} (another process is downloading "
                f"{layout.file_name}); retry, or look for a process stuck while holding it"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _lock_for(self, path: Path) -> FileLock:
        """This process's lock object for ``path``, once the directory and lock file are usable."""
        try:
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_private_directory(self.cache_dir, ENV_MASTER_CACHE_DIR)
        except OSError as exc:
            raise MasterCacheUnavailable(exc.strerror or str(exc)) from None
        except UnsafeDirectory as exc:
            raise MasterFileError(f"refusing the master-file cache: {exc}") from None
        _create_lock_file(path)
        with self._guard:
            if self._lock_pid != os.getpid():  # filelock refuses objects inherited across fork
                self._locks, self._lock_pid = {}, os.getpid()
            lock = self._locks.get(str(path))
            if lock is None:
                lock = self._locks[str(path)] = FileLock(str(path), mode=0o600)
            return lock


def _create_lock_file(path: Path) -> None:
    """Create the lock file safely (see :func:`~..files.create_lock_file`), in this module's errors."""
    try:
        create_lock_file(path)
    except LockFileUnavailable as exc:
        raise MasterCacheUnavailable(str(exc)) from None
    except UnsafeLockFile as exc:
        raise MasterFileError(str(exc)) from None


def _signature(path: Path) -> _Signature | None:
    """Identity of the file now at ``path``: a rename by a peer changes it."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _resolve_base_url(base_url: str | None) -> str:
    url = (base_url or os.environ.get(ENV_MASTER_BASE_URL) or DEFAULT_MASTER_BASE_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise MasterFileError(f"the master base URL must start with http:// or https://, got {url!r}")
    return url


def _resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    configured = cache_dir if cache_dir is not None else os.environ.get(ENV_MASTER_CACHE_DIR) or DEFAULT_CACHE_DIR
    return Path(configured).expanduser()
