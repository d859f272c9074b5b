"""Synthetic KIS stock master files, and the broken downloads the fake can serve instead.

Why synthetic: the real files change daily and are not ours to ship, yet a
parser is only tested by data in the real layout.  These files use KIS's
layout exactly (cp949, a variable-length front, a fixed-width tail) with a
few hand-written rows worth asserting on (a stock, an ETF, a REIT, a SPAC,
odd names) plus a few hundred seeded ones, so every run sees the same bytes.

The faults are the ways a download can go wrong that a client must refuse
without writing anything: see :class:`MasterFault`.  Independently of them, the
fake can send its answers with a ``Content-Encoding`` (:data:`MASTER_ENCODINGS`),
as a host or a proxy in front of it may: clients ask for ``gzip, deflate``, so
a client that reads the raw body sees an encoded archive, not a zip.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import threading
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

#: KIS's layouts, written out again here on purpose: the fake is an independent witness of the
#: format, so a wrong width in the parser's table (market/masters.py) fails the tests instead of
#: being mirrored by the fake.  (field name, width) pairs, in order; the line end makes the tail
#: one character longer than the widths' sum, as KIS counts it.
_KOSPI_FIELDS: tuple[tuple[str, int], ...] = (
    ("그룹코드", 2),
    ("시가총액규모", 1),
    ("지수업종대분류", 4),
    ("지수업종중분류", 4),
    ("지수업종소분류", 4),
    ("제조업", 1),
    ("저유동성", 1),
    ("지배구조지수종목", 1),
    ("KOSPI200섹터업종", 1),
    ("KOSPI100", 1),
    ("KOSPI50", 1),
    ("KRX", 1),
    ("ETP", 1),
    ("ELW발행", 1),
    ("KRX100", 1),
    ("KRX자동차", 1),
    ("KRX반도체", 1),
    ("KRX바이오", 1),
    ("KRX은행", 1),
    ("SPAC", 1),
    ("KRX에너지화학", 1),
    ("KRX철강", 1),
    ("단기과열", 1),
    ("KRX미디어통신", 1),
    ("KRX건설", 1),
    ("Non1", 1),
    ("KRX증권", 1),
    ("KRX선박", 1),
    ("KRX섹터_보험", 1),
    ("KRX섹터_운송", 1),
    ("SRI", 1),
    ("기준가", 9),
    ("매매수량단위", 5),
    ("시간외수량단위", 5),
    ("거래정지", 1),
    ("정리매매", 1),
    ("관리종목", 1),
    ("시장경고", 2),
    ("경고예고", 1),
    ("불성실공시", 1),
    ("우회상장", 1),
    ("락구분", 2),
    ("액면변경", 2),
    ("증자구분", 2),
    ("증거금비율", 3),
    ("신용가능", 1),
    ("신용기간", 3),
    ("전일거래량", 12),
    ("액면가", 12),
    ("상장일자", 8),
    ("상장주수", 15),
    ("자본금", 21),
    ("결산월", 2),
    ("공모가", 7),
    ("우선주", 1),
    ("공매도과열", 1),
    ("이상급등", 1),
    ("KRX300", 1),
    ("KOSPI", 1),
    ("매출액", 9),
    ("영업이익", 9),
    ("경상이익", 9),
    ("당기순이익", 5),
    ("ROE", 9),
    ("기준년월", 8),
    ("시가총액", 9),
    ("그룹사코드", 3),
    ("회사신용한도초과", 1),
    ("담보대출가능", 1),
    ("대주가능", 1),
)
_KOSDAQ_FIELDS: tuple[tuple[str, int], ...] = (
    ("그룹코드", 2),
    ("시가총액규모", 1),
    ("지수업종대분류", 4),
    ("지수업종중분류", 4),
    ("지수업종소분류", 4),
    ("벤처기업", 1),
    ("저유동성", 1),
    ("KRX", 1),
    ("ETP", 1),
    ("KRX100", 1),
    ("KRX자동차", 1),
    ("KRX반도체", 1),
    ("KRX바이오", 1),
    ("KRX은행", 1),
    ("SPAC", 1),
    ("KRX에너지화학", 1),
    ("KRX철강", 1),
    ("단기과열", 1),
    ("KRX미디어통신", 1),
    ("KRX건설", 1),
    ("투자주의", 1),
    ("KRX증권", 1),
    ("KRX선박", 1),
    ("KRX섹터_보험", 1),
    ("KRX섹터_운송", 1),
    ("KOSDAQ150", 1),
    ("기준가", 9),
    ("매매수량단위", 5),
    ("시간외수량단위", 5),
    ("거래정지", 1),
    ("정리매매", 1),
    ("관리종목", 1),
    ("시장경고", 2),
    ("경고예고", 1),
    ("불성실공시", 1),
    ("우회상장", 1),
    ("락구분", 2),
    ("액면변경", 2),
    ("증자구분", 2),
    ("증거금비율", 3),
    ("신용가능", 1),
    ("신용기간", 3),
    ("전일거래량", 12),
    ("액면가", 12),
    ("상장일자", 8),
    ("상장주수", 15),
    ("자본금", 21),
    ("결산월", 2),
    ("공모가", 7),
    ("우선주", 1),
    ("공매도과열", 1),
    ("이상급등", 1),
    ("KRX300", 1),
    ("매출액", 9),
    ("영업이익", 9),
    ("경상이익", 9),
    ("당기순이익", 5),
    ("ROE", 9),
    ("기준년월", 8),
    ("시가총액", 9),
    ("그룹사코드", 3),
    ("회사신용한도초과", 1),
    ("담보대출가능", 1),
    ("대주가능", 1),
)


@dataclass(frozen=True)
class MasterLayout:
    """One master file as KIS publishes it: where it is served and its fixed-width tail."""

    market: str
    file_name: str
    fields: tuple[tuple[str, int], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(width for _, width in self.fields)

    @property
    def zip_name(self) -> str:
        return f"{self.file_name}.zip"

    @property
    def url_path(self) -> str:
        return f"/common/master/{self.zip_name}"


LAYOUTS: Mapping[str, MasterLayout] = {
    "kospi": MasterLayout("kospi", "kospi_code.mst", _KOSPI_FIELDS),
    "kosdaq": MasterLayout("kosdaq", "kosdaq_code.mst", _KOSDAQ_FIELDS),
}
#: Uncompressed bytes the ``oversized`` fault's member goes past: above any cap a client
#: should accept for files of a few hundred kilobytes (the library refuses 64 MiB).
MAX_UNCOMPRESSED_BYTES = 64 << 20

__all__ = [
    "ARCHIVE_NAMES",
    "BAD_CP949_LINE",
    "DEFAULT_MASTER_DELAY",
    "GZIP_BOMB_BYTES",
    "MASTER_ENCODINGS",
    "ROUTES",
    "TRUNCATED_LINE",
    "MasterFault",
    "MasterFaultPlan",
    "MasterFaults",
    "MasterRow",
    "accepts_encoding",
    "encode_body",
    "kosdaq_rows",
    "kospi_rows",
    "master_answer",
    "master_download",
    "master_rows",
    "master_text",
    "master_zip",
]

#: URL path -> market, for the fake's GET routes.
ROUTES: Mapping[str, str] = {layout.url_path: market for market, layout in LAYOUTS.items()}
#: Market -> the archive's file name, as ``stats.master_downloads`` counts it.
ARCHIVE_NAMES: Mapping[str, str] = {market: layout.zip_name for market, layout in LAYOUTS.items()}
#: The line (1-based) that ``non-cp949`` breaks and the one ``truncated`` cuts short.
BAD_CP949_LINE = 3
TRUNCATED_LINE = 7
DEFAULT_MASTER_DELAY = 1.0
GENERATED_ROWS = {"kospi": 320, "kosdaq": 240}
#: Absolute member name of the ``zip-absolute`` fault: tests check it never appears.
ABSOLUTE_MEMBER = "/tmp/korea-investment-stock-fake-absolute.mst"  # noqa: S108 (a member name, never opened)
_ZIP_DATE = (2024, 1, 2, 7, 30, 0)
_CONTENT_TYPE = "application/zip"
#: The content codings the fake can apply to its answers (``None``: the identity, unencoded).
#: ``deflate`` is the zlib format RFC 9110 names, not raw deflate.
MASTER_ENCODINGS = ("gzip", "deflate")
#: What the ``gzip-bomb`` fault's body decodes to: the uncompressed cap + 1 bytes (~64 KiB on the wire).
GZIP_BOMB_BYTES = MAX_UNCOMPRESSED_BYTES + 1


class MasterFault(StrEnum):
    """What :meth:`FakeKIS.set_master_fault` can make a master download return."""

    HTTP500 = "http500"  # HTTP 500, an HTML body
    CORRUPT = "corrupt"  # the real zip cut in half: no central directory
    BAD_CRC = "bad-crc"  # a stored member with one byte changed: the CRC check fails
    ZIP_SLIP = "zip-slip"  # the real member plus one named ../evil.mst
    ZIP_ABSOLUTE = "zip-absolute"  # the real member plus one with an absolute path
    ZIP_SYMLINK = "zip-symlink"  # the .mst member is a symbolic link
    OVERSIZED = "oversized"  # a member of the uncompressed cap + 1 bytes (compresses to ~64 KiB)
    LYING_HEADER = "lying-header"  # headers claim 1000 bytes, the data inflates to 1 MiB
    NON_CP949 = "non-cp949"  # line BAD_CP949_LINE holds bytes that are not cp949
    TRUNCATED = "truncated"  # line TRUNCATED_LINE is shorter than the layout
    DELAY = "delay"  # the normal answer, after `delay` seconds
    GZIP_BOMB = "gzip-bomb"  # Content-Encoding: gzip, ~64 KiB that decode to GZIP_BOMB_BYTES zeros


@dataclass(frozen=True)
class MasterRow:
    """One symbol as the file holds it: the front, and the tail's raw fixed-width values."""

    short_code: str
    standard_code: str
    name: str
    tail: Mapping[str, str]

    def line(self, layout: MasterLayout) -> str:
        """The record without its line end."""
        tail = "".join(self.tail[name] for name in layout.names)
        return f"{self.short_code:<9}{self.standard_code:<12}{self.name}{tail}"


@dataclass(frozen=True)
class _Spec:
    short_code: str
    name: str
    group: str
    price: int
    listed: str
    spac: bool = False


_KOSPI_SPECIALS = (
    _Spec("005930", "삼성전자", "ST", 71000, "19750611"),
    _Spec("000660", "SK하이닉스", "ST", 178500, "19961226"),
    _Spec("069500", "KODEX 200", "EF", 35120, "20021014"),
    _Spec("0000J0", "TIGER 미국 나스닥100 커버드콜(합성)", "EF", 10050, "20240116"),
    _Spec("330590", "롯데리츠", "RT", 3205, "20191030"),
    _Spec("003550", "LG", "ST", 78900, "19700413"),
    _Spec("005935", "삼성전자우", "ST", 58800, "19890925"),
    _Spec("009999", "  한국투자증권 ACE 미국빅테크TOP7 Plus레버리지(합성)  ", "EF", 9870, "20231010"),
)
_KOSDAQ_SPECIALS = (
    _Spec("247540", "에코프로비엠", "ST", 183000, "20190305"),
    _Spec("091990", "셀트리온헬스케어", "ST", 61500, "20170728"),
    _Spec("035720", "카카오게임즈", "ST", 19980, "20200910"),
    _Spec("446190", "미래에셋비전스팩3호", "ST", 2000, "20221221", spac=True),
    _Spec("000250", "삼천당제약", "ST", 88400, "19970515"),
    _Spec("900110", "이스트아시아홀딩스", "FS", 136, "20100615"),
)
_SYLLABLES = "가나다라마바사아자차카타파하한국대신동서남북중앙제일삼성현기전화학이오건설금융에너지통미디어식품약반도체"
_SUFFIXES = ("", "", "전자", "화학", "제약", "홀딩스", "바이오", "건설", "우", "에너지", "시스템")
_DIGIT_FLAGS = frozenset({"시가총액규모", "KOSPI200섹터업종", "SRI", "Non1"})


def _value(name: str, width: int, rng: random.Random) -> str:
    """A plausible raw value for one tail field, exactly ``width`` characters."""
    if width == 1:
        return str(rng.randrange(4)) if name in _DIGIT_FLAGS else rng.choice("NNNNY")
    return str(rng.randrange(10 ** min(width, 9))).zfill(width)


def _tail(layout: MasterLayout, spec: _Spec, rng: random.Random) -> dict[str, str]:
    fixed = {
        "그룹코드": spec.group,
        "기준가": str(spec.price).zfill(9),
        "매매수량단위": "00001",
        "시간외수량단위": "00001",
        "액면가": "000000000100",
        "상장일자": spec.listed,
        "결산월": "12",
        "기준년월": "202412  ",
        "SPAC": "Y" if spec.spac else "N",
        "거래정지": "N",
    }
    tail: dict[str, str] = {}
    for name, width in zip(layout.names, layout.widths, strict=True):
        tail[name] = fixed.get(name) or _value(name, width, rng)
        if len(tail[name]) != width:
            raise AssertionError(f"{name}: {tail[name]!r} is not {width} characters")
    return tail


def _standard_code(short_code: str) -> str:
    """An ISIN-shaped 표준코드 (KR7 + code + 00 + a check digit)."""
    check = sum(ord(c) for c in short_code) % 10
    return f"KR7{short_code}00{check}"


def _generated(market: str, count: int, taken: set[str], rng: random.Random) -> list[_Spec]:
    specs: list[_Spec] = []
    while len(specs) < count:
        code = str(rng.randrange(1000, 999999)).zfill(6)
        if code in taken:
            continue
        taken.add(code)
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 6))) + rng.choice(_SUFFIXES)
        group = rng.choice(("ST",) * 8 + ("EF", "RT"))
        date = f"{rng.randint(1975, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        specs.append(_Spec(code, name, group, rng.randint(100, 900000), date))
    return specs


@functools.cache
def master_rows(market: str) -> tuple[MasterRow, ...]:
    """Every row of the market's synthetic file, in file order (deterministic)."""
    layout = LAYOUTS[market]
    rng = random.Random(f"korea-investment-stock/{market}")
    specials = _KOSPI_SPECIALS if market == "kospi" else _KOSDAQ_SPECIALS
    specs = list(specials) + _generated(market, GENERATED_ROWS[market], {s.short_code for s in specials}, rng)
    return tuple(MasterRow(s.short_code, _standard_code(s.short_code), s.name, _tail(layout, s, rng)) for s in specs)


def kospi_rows() -> tuple[MasterRow, ...]:
    """The synthetic KOSPI rows (삼성전자 first)."""
    return master_rows("kospi")


def kosdaq_rows() -> tuple[MasterRow, ...]:
    """The synthetic KOSDAQ rows (에코프로비엠 first)."""
    return master_rows("kosdaq")


def master_text(market: str, line_end: str = "\n") -> bytes:
    """The ``.mst`` file's bytes: cp949, one record per line, every line terminated."""
    layout = LAYOUTS[market]
    return "".join(row.line(layout) + line_end for row in master_rows(market)).encode("cp949")


def _zip(members: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def _info(name: str, *, compress: int = zipfile.ZIP_DEFLATED, mode: int = 0o100644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compress
    info.external_attr = mode << 16
    return info


@functools.cache
def master_zip(market: str) -> bytes:
    """The archive the master host serves: one ``<market>_code.mst`` member."""
    layout = LAYOUTS[market]
    return _zip([(_info(layout.file_name), master_text(market))])


def _with_text(market: str, text: bytes) -> bytes:
    return _zip([(_info(LAYOUTS[market].file_name), text)])


def _non_cp949(market: str) -> bytes:
    lines = master_text(market).split(b"\n")
    index = BAD_CP949_LINE - 1
    lines[index] = lines[index][:21] + b"\xff\xfe" + lines[index][21:]  # 0xFF never starts a cp949 character
    return _with_text(market, b"\n".join(lines))


def _truncated(market: str) -> bytes:
    lines = master_text(market).split(b"\n")
    lines[TRUNCATED_LINE - 1] = lines[TRUNCATED_LINE - 1][:150]
    return _with_text(market, b"\n".join(lines))


def _bad_crc(market: str) -> bytes:
    text = master_text(market)
    data = bytearray(_zip([(_info(LAYOUTS[market].file_name, compress=zipfile.ZIP_STORED), text)]))
    at = data.find(text[:64]) + 200
    data[at] ^= 0x01
    return bytes(data)


def _extra_member(market: str, name: str) -> bytes:
    layout = LAYOUTS[market]
    return _zip([(_info(layout.file_name), master_text(market)), (_info(name), b"evil\n")])


def _symlink(market: str) -> bytes:
    return _zip([(_info(LAYOUTS[market].file_name, mode=0o120777), b"/etc/passwd")])


@functools.cache
def _oversized(market: str) -> bytes:
    """Honest headers, cap + 1 bytes of zeros: tiny on the wire, refused from the headers alone."""
    buffer = io.BytesIO()
    chunk = b"0" * (1 << 20)
    with zipfile.ZipFile(buffer, "w") as archive, archive.open(_info(LAYOUTS[market].file_name), "w") as member:
        for _ in range(MAX_UNCOMPRESSED_BYTES // len(chunk)):
            member.write(chunk)
        member.write(b"0")
    return buffer.getvalue()


def _lying_header(market: str) -> bytes:
    """Both headers claim 1000 bytes; the data inflates to 1 MiB (a reader must stop at the claim)."""
    data = bytearray(_with_text(market, b"0" * (1 << 20)))
    struct.pack_into("<I", data, 22, 1000)  # local file header: uncompressed size
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1000)  # central directory: uncompressed size
    return bytes(data)


@functools.cache
def _gzip_bomb(market: str) -> bytes:
    """A gzip stream of GZIP_BOMB_BYTES zeros, compressed in pieces (never all in memory at once)."""
    del market  # the same bomb for both files
    encoder = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [encoder.compress(chunk) for _ in range(GZIP_BOMB_BYTES // len(chunk))]
    parts.append(encoder.compress(bytes(GZIP_BOMB_BYTES % len(chunk))))
    parts.append(encoder.flush())
    return b"".join(parts)


_BUILDERS: Mapping[MasterFault, Callable[[str], bytes]] = {
    MasterFault.CORRUPT: lambda market: master_zip(market)[: len(master_zip(market)) // 2],
    MasterFault.BAD_CRC: _bad_crc,
    MasterFault.ZIP_SLIP: lambda market: _extra_member(market, "../evil.mst"),
    MasterFault.ZIP_ABSOLUTE: lambda market: _extra_member(market, ABSOLUTE_MEMBER),
    MasterFault.ZIP_SYMLINK: _symlink,
    MasterFault.OVERSIZED: _oversized,
    MasterFault.LYING_HEADER: _lying_header,
    MasterFault.NON_CP949: _non_cp949,
    MasterFault.TRUNCATED: _truncated,
    MasterFault.GZIP_BOMB: _gzip_bomb,
}


def master_answer(market: str, fault: MasterFault | None) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` for one download of ``market``'s archive.

    The ``gzip-bomb`` body is already gzip-encoded; :func:`master_download` labels it so.
    """
    if fault is MasterFault.HTTP500:
        return 500, b"<html><body>500 Internal Server Error</body></html>", "text/html; charset=UTF-8"
    builder = _BUILDERS.get(fault) if fault is not None else None
    return 200, builder(market) if builder else master_zip(market), _CONTENT_TYPE


def accepts_encoding(accept_encoding: str, encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits ``encoding`` (by name or ``*``, unless ``q=0``)."""
    for item in accept_encoding.split(","):
        name, *params = (part.strip().lower() for part in item.split(";"))
        if name not in (encoding, "*"):
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


@functools.cache
def encode_body(body: bytes, encoding: str) -> bytes:
    """``body`` in the content coding ``encoding`` (one of :data:`MASTER_ENCODINGS`), deterministically."""
    if encoding == "gzip":
        encoder = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # no name, mtime 0: same bytes every run
    elif encoding == "deflate":
        encoder = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    else:
        raise ValueError(f"encoding must be one of {MASTER_ENCODINGS}, got {encoding!r}")
    return encoder.compress(body) + encoder.flush()


def master_download(
    market: str, fault: MasterFault | None, encoding: str | None = None, accept_encoding: str = ""
) -> tuple[int, bytes, dict[str, str]]:
    """``(status, body, headers)`` for one download: :func:`master_answer`, content-coded.

    A 200 answer is sent in ``encoding`` when the request's ``Accept-Encoding``
    admits it, as a real server does; the ``gzip-bomb`` fault is gzip whatever
    was asked (a hostile host does not ask).  Error pages are sent as they are.
    """
    status, body, content_type = master_answer(market, fault)
    headers = {"Content-Type": content_type}
    if fault is MasterFault.GZIP_BOMB:
        headers["Content-Encoding"] = "gzip"
    elif status == 200 and encoding is not None and accepts_encoding(accept_encoding, encoding):
        body = encode_body(body, encoding)
        headers["Content-Encoding"] = encoding
    return status, body, headers


@dataclass(frozen=True)
class MasterFaultPlan:
    """The fault taken for one download: its kind and the wait before answering."""

    kind: MasterFault
    delay: float


@dataclass
class _Queued:
    kind: MasterFault
    remaining: int | None
    delay: float
    market: str | None


class MasterFaults:
    """Queued download faults, consumed in order by matching downloads (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()

    def add(self, kind: str, times: int | None, delay: float | None, market: str | None) -> None:
        """Queue ``kind`` for the next ``times`` downloads (of ``market`` only, when given)."""
        fault = MasterFault(kind)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError(f"times must be None or an int >= 1, got {times!r}")
        if market is not None and market not in LAYOUTS:
            raise ValueError(f"market must be one of {sorted(LAYOUTS)} or None, got {market!r}")
        wait = float(DEFAULT_MASTER_DELAY if delay is None and fault is MasterFault.DELAY else delay or 0.0)
        if wait < 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        with self._lock:
            self._queue.append(_Queued(fault, times, wait, market))

    def take(self, market: str) -> MasterFaultPlan | None:
        """The first queued fault for ``market``, counted as used; None when there is none."""
        with self._lock:
            for queued in self._queue:
                if queued.market in (None, market):
                    if queued.remaining is not None:
                        queued.remaining -= 1
                        if queued.remaining <= 0:
                            self._queue.remove(queued)
                    return MasterFaultPlan(queued.kind, queued.delay)
            return None

    def clear(self) -> None:
        """Forget every queued download fault."""
        with self._lock:
            self._queue.clear()
