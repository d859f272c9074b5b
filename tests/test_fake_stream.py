"""The fake KIS WebSocket on its own, driven by a bare ``websockets`` client (none of our realtime code).

Why apart from the client's tests: the fake is the yardstick the client is measured with; it
must be right about KIS's rules by itself, or a client bug and a fake bug could agree.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from korea_investment_stock.testing import FakeKIS
from korea_investment_stock.testing.aes import encrypt_block, encrypt_cbc


@pytest.fixture
def fake() -> Iterator[FakeKIS]:
    with FakeKIS(rest_rate_limit=None, websocket=True) as server:
        yield server


def approval(fake: FakeKIS) -> str:
    answer = requests.post(
        fake.url + "/oauth2/Approval",
        json={"grant_type": "client_credentials", "appkey": fake.app_key, "secretkey": fake.app_secret},
        timeout=5,
    )
    answer.raise_for_status()
    return str(answer.json()["approval_key"])


def frame(key: str, tr_id: str, tr_key: str, tr_type: str = "1") -> str:
    return json.dumps(
        {
            "header": {"approval_key": key, "custtype": "P", "tr_type": tr_type, "content-type": "utf-8"},
            "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
        }
    )


def open_ws(fake: FakeKIS) -> ClientConnection:
    return connect(fake.ws_url, ping_interval=None, compression=None, open_timeout=5, legacy=True)


def request(ws: ClientConnection, key: str, tr_id: str, tr_key: str, tr_type: str = "1") -> dict[str, Any]:
    """Send one frame and return the next control answer (skipping PINGPONG and data)."""
    ws.send(frame(key, tr_id, tr_key, tr_type))
    while True:
        text = ws.recv(timeout=5)
        assert isinstance(text, str)
        if text[0] in "01":
            continue
        answer: dict[str, Any] = json.loads(text)
        if answer["header"]["tr_id"] != "PINGPONG":
            return answer


def next_data(ws: ClientConnection) -> str:
    while True:
        text = ws.recv(timeout=5)
        assert isinstance(text, str)
        if text[0] in "01":
            return text


def test_aes_matches_fips_197_vector() -> None:
    key = bytes(range(32))
    block = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert encrypt_block(block, key).hex() == "8ea2b7ca516745bfeafc49904b496089"


def test_aes_cbc_round_trips_through_cryptography() -> None:
    crypto = pytest.importorskip("cryptography.hazmat.primitives.ciphers")
    padding = pytest.importorskip("cryptography.hazmat.primitives.padding")
    key, iv, message = b"k" * 32, b"i" * 16, "체결^005930^".encode() * 5
    decryptor = crypto.Cipher(crypto.algorithms.AES(key), crypto.modes.CBC(iv)).decryptor()
    padded = decryptor.update(encrypt_cbc(message, key, iv)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    assert unpadder.update(padded) + unpadder.finalize() == message


def test_subscribe_answer_and_multi_record_frames_with_extra_fields(fake: FakeKIS) -> None:
    key = approval(fake)
    with open_ws(fake) as ws:
        answer = request(ws, key, "H0STCNT0", "005930")
        assert answer["body"]["msg_cd"] == "OPSP0000"
        assert answer["body"]["msg1"] == "SUBSCRIBE SUCCESS"
        assert len(answer["body"]["output"]["key"]) == 32 and len(answer["body"]["output"]["iv"]) == 16
        assert answer["header"] == {"tr_id": "H0STCNT0", "tr_key": "005930", "encrypt": "N"}
        assert fake.stream.emit_trades("005930", records=3) == 1
        flag, tr_id, count, payload = next_data(ws).split("|", 3)
        assert (flag, tr_id, count) == ("0", "H0STCNT0", "003")
        values = payload.split("^")
        assert len(values) == 3 * 46 and values[0] == values[46] == values[92] == "005930"
        fake.stream.configure(extra_fields=2)
        fake.stream.emit_trades("005930", records=2)
        assert len(next_data(ws).split("|", 3)[3].split("^")) == 2 * 48
        assert request(ws, key, "H0STASP0", "000660")["body"]["msg_cd"] == "OPSP0000"
        fake.stream.configure(extra_fields=0)
        fake.stream.emit_orderbooks("000660")
        flag, tr_id, count, payload = next_data(ws).split("|", 3)
        assert (tr_id, count, len(payload.split("^"))) == ("H0STASP0", "001", 59)
    assert fake.stream.stats.frames_sent == 3


def test_already_subscribed_unsubscribe_and_not_found(fake: FakeKIS) -> None:
    key = approval(fake)
    with open_ws(fake) as ws:
        assert request(ws, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0000"
        assert request(ws, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0002"
        assert request(ws, key, "H0STCNT0", "005930", "2")["body"]["msg1"] == "UNSUBSCRIBE SUCCESS"
        assert request(ws, key, "H0STCNT0", "005930", "2")["body"]["msg_cd"] == "OPSP0003"
        assert fake.stream.emit_trades("005930") == 0
        assert request(ws, key, "H0STCNT0", "005930", "0")["body"]["msg_cd"] == "OPSP9998"


def test_second_session_is_refused_with_opsp8996_and_never_counted(fake: FakeKIS) -> None:
    key = approval(fake)
    with open_ws(fake) as first, open_ws(fake) as second:
        assert request(first, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0000"
        refusal = request(second, key, "H0STCNT0", "000660")
        assert refusal == {
            "header": {"tr_id": "(null)", "tr_key": "", "encrypt": "N"},
            "body": {"rt_cd": "9", "msg_cd": "OPSP8996", "msg1": "ALREADY IN USE appkey"},
        }
        with pytest.raises(ConnectionClosed):
            second.recv(timeout=5)
        fake.stream.emit_trades("005930")
        assert next_data(first).startswith("0|H0STCNT0|")
    stats = fake.stream.stats
    assert stats.opsp8996 == 1
    assert stats.max_concurrent == {fake.app_key: 1}
    assert stats.sessions_opened == {fake.app_key: 1}


def test_second_session_evicts_the_first_when_so_switched(fake: FakeKIS) -> None:
    fake.stream.configure(second_session="evict")
    key = approval(fake)
    with open_ws(fake) as first, open_ws(fake) as second:
        assert request(first, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0000"
        assert request(second, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0000"
        with pytest.raises(ConnectionClosed):
            while True:
                first.recv(timeout=5)
    stats = fake.stream.stats
    assert (stats.evictions, stats.opsp8996, stats.max_concurrent[fake.app_key]) == (1, 0, 1)


def test_release_lag_keeps_the_app_key_busy_after_a_close(fake: FakeKIS) -> None:
    fake.stream.configure(release_lag=30.0)
    key = approval(fake)
    with open_ws(fake) as first:
        assert request(first, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0000"
    fake.stream.wait_for(lambda s: not s.live_sessions)
    with open_ws(fake) as again:
        assert request(again, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP8996"


def test_the_42nd_subscription_gets_opsp0008_counting_every_kind(fake: FakeKIS) -> None:
    key = approval(fake)
    with open_ws(fake) as ws:
        assert request(ws, key, "H0STCNI0", "HTSUSER")["body"]["msg_cd"] == "OPSP0000"
        for n in range(20):
            assert request(ws, key, "H0STCNT0", f"{n:06d}")["body"]["msg_cd"] == "OPSP0000"
            assert request(ws, key, "H0STASP0", f"{n:06d}")["body"]["msg_cd"] == "OPSP0000"
        refusal = request(ws, key, "H0STCNT0", "999999")
        assert (refusal["body"]["msg_cd"], refusal["body"]["msg1"]) == ("OPSP0008", "MAX SUBSCRIBE OVER")
        assert refusal["body"]["rt_cd"] == "1"
        assert request(ws, key, "H0STASP0", "000000", "2")["body"]["msg_cd"] == "OPSP0001"
        assert request(ws, key, "H0STCNT0", "999999")["body"]["msg_cd"] == "OPSP0000"
    stats = fake.stream.stats
    assert (stats.opsp0008, stats.subscribes) == (1, 42)


def test_a_stale_approval_key_is_refused_and_the_socket_cut(fake: FakeKIS) -> None:
    old = approval(fake)
    new = approval(fake)
    with open_ws(fake) as ws:
        refusal = request(ws, old, "H0STCNT0", "005930")
        assert refusal["body"]["msg_cd"] == "OPSP0011"
        assert refusal["body"]["msg1"] == f"invalid approval : {old}"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is None  # no close frame: 1006 at the client
    with open_ws(fake) as ws:
        assert request(ws, new, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0000"
    assert fake.stream.stats.stale_key_refusals == 1


def test_stale_key_sessions_drop_switch_cuts_an_open_session(fake: FakeKIS) -> None:
    fake.stream.configure(stale_key_sessions="drop")
    key = approval(fake)
    with open_ws(fake) as ws:
        assert request(ws, key, "H0STCNT0", "005930")["body"]["msg_cd"] == "OPSP0000"
        approval(fake)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)


def test_pingpong_answered_keeps_the_session_unanswered_drops_it(fake: FakeKIS) -> None:
    fake.stream.configure(ping_interval=0.05, ping_misses=2)
    key = approval(fake)
    with open_ws(fake) as ws:
        request(ws, key, "H0STCNT0", "005930")
        pings = 0
        while pings < 4:
            text = ws.recv(timeout=5)
            assert isinstance(text, str)
            if json.loads(text)["header"]["tr_id"] == "PINGPONG":
                ws.send(text)  # the echo most clients send
                pings += 1
        fake.stream.wait_for(lambda s: s.pongs_text >= 4)
        assert fake.stream.stats.ping_drops == 0
    fake.stream.wait_for(lambda s: not s.live_sessions)
    with open_ws(fake) as silent_client:
        request(silent_client, key, "H0STCNT0", "005930")
        fake.stream.wait_for(lambda s: s.ping_drops == 1)
        with pytest.raises(ConnectionClosed):
            while True:
                silent_client.recv(timeout=5)


def test_a_pong_frame_also_answers_unless_text_is_required(fake: FakeKIS) -> None:
    fake.stream.configure(ping_interval=0.05, ping_misses=2)
    key = approval(fake)
    with open_ws(fake) as ws:
        request(ws, key, "H0STCNT0", "005930")
        for _ in range(4):
            text = ws.recv(timeout=5)
            ws.pong(text.encode() if isinstance(text, str) else text)
        fake.stream.wait_for(lambda s: s.pongs_frame >= 4)
        assert fake.stream.stats.ping_drops == 0
        fake.stream.configure(pong_reply="text")
        fake.stream.wait_for(lambda s: s.ping_drops == 1)


def test_encrypted_notice_decrypts_with_the_answers_key(fake: FakeKIS) -> None:
    crypto = pytest.importorskip("cryptography.hazmat.primitives.ciphers")
    key = approval(fake)
    with open_ws(fake) as ws:
        output = request(ws, key, "H0STCNI0", "HTSUSER")["body"]["output"]
        assert fake.stream.emit_notice("HTSUSER", "0000012345", "005930", "buy", 3, 71000) == 1
        assert fake.stream.emit_notice("OTHER", "1", "005930", "buy", 3, 71000) == 0
        flag, tr_id, count, payload = next_data(ws).split("|", 3)
        assert (flag, tr_id, count) == ("1", "H0STCNI0", "001")
        cipher = crypto.Cipher(
            crypto.algorithms.AES(output["key"].encode()), crypto.modes.CBC(output["iv"].encode())
        ).decryptor()
        plain = cipher.update(base64.b64decode(payload)) + cipher.finalize()
        values = plain[: -plain[-1]].decode().split("^")
        assert len(values) == 26
        assert (values[2], values[4], values[8], values[9], values[10], values[13]) == (
            "0000012345",
            "02",
            "005930",
            "3",
            "71000",
            "2",
        )


def test_synthetic_data_at_a_rate(fake: FakeKIS) -> None:
    fake.stream.configure(data_interval=0.01, records_per_frame=2)
    key = approval(fake)
    with open_ws(fake) as ws:
        request(ws, key, "H0STCNT0", "005930")
        for _ in range(5):
            assert next_data(ws).startswith("0|H0STCNT0|002|005930^")
    assert fake.stream.stats.frames_sent >= 5


def test_faults_refuse_silence_and_drop(fake: FakeKIS) -> None:
    key = approval(fake)
    fake.stream.refuse_connections(30)
    with pytest.raises(InvalidStatus):
        open_ws(fake)
    fake.stream.refuse_connections(0)
    fake.stream.configure(ping_interval=0.05)
    with open_ws(fake) as ws:
        request(ws, key, "H0STCNT0", "005930")
        fake.stream.go_silent()
        sent = fake.stream.stats.pings_sent
        assert fake.stream.emit_trades("005930") == 0
        with pytest.raises(TimeoutError):
            while True:
                ws.recv(timeout=0.3)  # the only wait on silence: nothing may arrive
        assert fake.stream.stats.pings_sent <= sent + 1
    fake.stream.wait_for(lambda s: not s.live_sessions)
    with open_ws(fake) as ws:
        request(ws, key, "H0STCNT0", "005930")
        requests.post(fake.url + "/__fake__/control", json={"action": "ws_drop"}, timeout=5).raise_for_status()
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
    stats = requests.get(fake.url + "/__fake__/ws_stats", timeout=5).json()
    assert stats["refused_connections"] == 1 and stats["drops"] == 1
    assert stats["max_concurrent"] == {fake.app_key: 1}
