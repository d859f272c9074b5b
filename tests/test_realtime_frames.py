"""Frames, events, decryption and the registry of the realtime room, without a socket."""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal

import pytest

from korea_investment_stock.errors import SubscriptionLimitError
from korea_investment_stock.realtime import frames
from korea_investment_stock.realtime.backoff import Backoff, ReconnectBudget
from korea_investment_stock.realtime.events import KST
from korea_investment_stock.realtime.registry import Subscription, SubscriptionRegistry
from korea_investment_stock.realtime.settings import MOCK_WS_URL, REAL_WS_URL, resolve_hts_id, resolve_ws_url
from korea_investment_stock.testing import stream_data
from korea_investment_stock.testing.aes import encrypt_cbc

NOW = datetime(2026, 3, 4, 9, 30, 15, tzinfo=KST)


def trade_frame(records: int, extra: int = 0) -> str:
    rows = [stream_data.trade_record("005930", n, NOW, extra=extra) for n in range(records)]
    return stream_data.data_frame("H0STCNT0", rows)


def test_trades_by_position_multi_record_and_extra_fields() -> None:
    for extra in (0, 3):
        frame = frames.parse(trade_frame(3, extra))
        assert isinstance(frame, frames.DataFrame) and frame.count == 3 and not frame.encrypted
        trades = frames.parse_trades(frame)
        assert [t.symbol for t in trades] == ["005930"] * 3
        assert all(isinstance(t.price, Decimal) for t in trades)
        assert trades[1].volume == 2
        assert trades[0].time == NOW and trades[0].time.utcoffset() is not None
        assert len(trades[0].raw) == 46 + extra


def test_orderbook_levels_best_first() -> None:
    text = stream_data.data_frame("H0STASP0", [stream_data.orderbook_record("000660", 2, NOW)])
    frame = frames.parse(text)
    assert isinstance(frame, frames.DataFrame)
    (book,) = frames.parse_orderbooks(frame)
    assert len(book.asks) == len(book.bids) == 10
    assert book.asks[0][0] < book.asks[1][0] and book.bids[0][0] > book.bids[1][0]
    assert book.asks[0][0] > book.bids[0][0]
    assert book.time.tzinfo is not None


def test_notice_decrypts_and_parses_old_and_new_widths() -> None:
    key, iv = "k" * 32, "i" * 16
    record = stream_data.notice_record("HTSID", "0000012345", "005930", "sell", 7, 71000, NOW)
    for values in (record, record[:23]):  # 26 since 2025, 23 before
        cipher = base64.b64encode(encrypt_cbc("^".join(values).encode(), key.encode(), iv.encode())).decode()
        frame = frames.parse(f"1|H0STCNI0|001|{cipher}")
        assert isinstance(frame, frames.DataFrame) and frame.encrypted
        from korea_investment_stock.realtime.crypto import decrypt

        (notice,) = frames.parse_notices(decrypt(frame.payload, key, iv), frame.count)
        assert (notice.order_number, notice.symbol, notice.side) == ("0000012345", "005930", "sell")
        assert (notice.filled_quantity, notice.price, notice.filled) == (7, Decimal(71000), True)


def test_control_frames_and_pingpong() -> None:
    ping = frames.parse('{"header": {"tr_id": "PINGPONG", "datetime": "20260304093015"}}')
    assert isinstance(ping, frames.ControlFrame) and ping.is_pingpong
    ack = frames.parse(
        '{"header": {"tr_id": "H0STCNI0", "tr_key": "HTS", "encrypt": "N"}, "body": {"rt_cd": "0", '
        '"msg_cd": "OPSP0000", "msg1": "SUBSCRIBE SUCCESS", "output": {"iv": "i", "key": "k"}}}'
    )
    assert isinstance(ack, frames.ControlFrame) and ack.ok and ack.cipher == ("k", "i")
    stale = frames.parse(
        '{"header": {"tr_id": "x"}, "body": {"rt_cd": "9", "msg_cd": "X", "msg1": "invalid approval : k"}}'
    )
    assert isinstance(stale, frames.ControlFrame) and stale.stale_key and not stale.ok


def test_bad_frames_are_frame_errors() -> None:
    for text in ("0|H0STCNT0|002|a^b^c", "0|H0STCNT0|x|a", "not json", "0|H0STCNT0"):
        with pytest.raises(frames.FrameError):
            frame = frames.parse(text)
            assert isinstance(frame, frames.DataFrame)
            frames.parse_trades(frame)
    short = frames.parse("0|H0STCNT0|001|005930^093015^100")
    assert isinstance(short, frames.DataFrame)
    with pytest.raises(frames.FrameError, match="fewer"):
        frames.parse_trades(short)


def test_request_frame_shape() -> None:
    import json

    sent = json.loads(frames.request_frame("KEY", "H0STCNT0", "005930", subscribe=False))
    assert sent == {
        "header": {"approval_key": "KEY", "custtype": "P", "tr_type": "2", "content-type": "utf-8"},
        "body": {"input": {"tr_id": "H0STCNT0", "tr_key": "005930"}},
    }


def test_registry_counts_per_kind_and_symbol_and_refuses_past_the_cap() -> None:
    registry = SubscriptionRegistry(cap=3)
    a, b = Subscription("trades", "005930"), Subscription("orderbooks", "005930")
    assert registry.acquire("s1", [a, b]) == [a, b]
    assert registry.acquire("s2", [a]) == []  # shared: no new slot
    with pytest.raises(SubscriptionLimitError) as refused:
        registry.acquire("s2", [Subscription("trades", "1"), Subscription("trades", "2")])
    assert refused.value.cap == 3 and "trades:005930" in refused.value.held
    assert "41" not in str(refused.value) and "cap of 3" in str(refused.value)
    assert registry.holders(Subscription("trades", "1")) == frozenset()
    assert registry.release("s1") == [b]
    assert registry.release("s2", [a]) == [a]
    assert registry.held() == {}


def test_tr_ids_and_settings() -> None:
    assert Subscription("notices", "HTS").tr_id(mock=True) == "H0STCNI9"
    assert Subscription("notices", "HTS").tr_id() == "H0STCNI0"
    assert resolve_ws_url(environ={}) == REAL_WS_URL
    assert resolve_ws_url(mock=True, environ={}) == MOCK_WS_URL
    assert resolve_ws_url(environ={"KOREA_INVESTMENT_WS_URL": "ws://h:1"}) == "ws://h:1"
    assert resolve_ws_url("ws://arg:2", environ={"KOREA_INVESTMENT_WS_URL": "ws://h:1"}) == "ws://arg:2"
    assert resolve_hts_id(environ={"KOREA_INVESTMENT_HTS_ID": " me "}) == "me"
    assert resolve_hts_id(environ={}) is None


def test_backoff_jitter_and_budget() -> None:
    backoff = Backoff(base=1.0, cap=4.0, rng=lambda: 1.0)
    assert [backoff.next() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 1.0
    now = [0.0]
    budget = ReconnectBudget(per_minute=2, clock=lambda: now[0])
    budget.record()
    budget.record()
    assert budget.wait_time() == 60.0
    now[0] = 59.0
    assert budget.wait_time() == 1.0
    now[0] = 60.0
    assert budget.wait_time() == 0.0


def test_missing_extras_name_the_realtime_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['websockets'] = None; sys.modules['cryptography'] = None\n"
        "from korea_investment_stock.testing import FakeKIS\n"
        "from korea_investment_stock.realtime.crypto import require_cryptography\n"
        "with FakeKIS() as fake:\n"
        "    try:\n"
        "        fake.ws_url\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
        "try:\n"
        "    require_cryptography()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.count("korea-investment-stock[realtime]") == 2, out


def test_a_full_outbox_drops_data_before_control_and_counts_events_not_frames() -> None:
    """A Gap's count is events lost: a control message is never one, a frame of 2 records is two."""
    from korea_investment_stock.realtime.relay import Outbox, control, parse_gap

    outbox = Outbox(maxsize=3)
    outbox.put(control("state", owner="x"))
    outbox.put("0|H0STCNT0|002|a^b^c^d")
    outbox.put("0|H0STCNT0|001|e^f")
    outbox.put("0|H0STCNT0|001|g^h")  # full: the oldest *data* frame goes
    batch = outbox.take(1.0)
    import json

    gap = parse_gap(json.loads(batch[0]))
    assert gap.dropped == 2
    assert batch[1:] == [control("state", owner="x"), "0|H0STCNT0|001|e^f", "0|H0STCNT0|001|g^h"]
