"""Transport failures name their cause and say whether the request could have reached the host.

Proven over real loopback sockets: a port nobody listens on, a listener that
closes or resets after reading the request, one that never answers, a plain
listener behind ``https://``.  ``request_sent`` decides whether an order may be
sent again, so a wrong ``False`` would be a double order: every "may have
arrived" case must say ``True``.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from korea_investment_stock.errors import KISAPIError, KISConnectionError
from korea_investment_stock.transport import exchange_json, new_session


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _listener(behaviour: str) -> Iterator[tuple[int, threading.Event]]:
    """A one-connection-at-a-time server: ``close``/``reset`` after the request arrives, ``silent``,
    or ``hang up`` at the first bytes (a TLS client hello)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    got_request = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                data = b""
                conn.settimeout(5)
                while b"\r\n\r\n" not in data and not (behaviour == "hang up" and data):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    got_request.set()
                if behaviour == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif behaviour == "silent":
                    stop.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1]), got_request
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _call(url: str, timeout: tuple[float, float] = (1.0, 1.0)) -> KISConnectionError:
    session = new_session()
    try:
        with pytest.raises(KISConnectionError) as caught:
            exchange_json(
                session,
                "POST",
                url,
                "/order",
                name="order",
                timeout=timeout,
                unreachable=KISConnectionError,
                failed=KISAPIError,
                json={"ORD_QTY": "1"},
            )
        return caught.value
    finally:
        session.close()


def test_a_refused_connection_was_not_sent() -> None:
    error = _call(f"http://127.0.0.1:{_free_port()}")
    assert (error.cause, error.request_sent) == ("refused", False)
    assert "refused" in str(error)


def test_an_unresolvable_host_was_not_sent() -> None:
    error = _call("http://no-such-host.invalid")
    assert (error.cause, error.request_sent) == ("dns", False)
    assert "DNS" in str(error)


@pytest.mark.parametrize("behaviour", ["close", "reset"])
def test_a_connection_dropped_after_the_request_may_have_arrived(behaviour: str) -> None:
    with _listener(behaviour) as (port, got_request):
        error = _call(f"http://127.0.0.1:{port}")
    assert got_request.is_set()
    assert error.request_sent is True
    assert error.cause == "reset"


def test_a_read_timeout_may_have_arrived() -> None:
    with _listener("silent") as (port, got_request):
        error = _call(f"http://127.0.0.1:{port}", timeout=(1.0, 0.3))
    assert got_request.is_set()
    assert (error.cause, error.request_sent) == ("read timeout", True)


def test_tls_against_a_plain_listener_fails_in_the_handshake_before_sending() -> None:
    with _listener("hang up") as (port, _):
        error = _call(f"https://127.0.0.1:{port}")
    assert error.cause in ("tls", "reset")
    assert error.request_sent is False  # the handshake failed: no HTTP byte was written
    assert "TLS" in str(error) or "reset" in str(error)


# ------------------------------------------------------------------------------------------------
# Through the client: tokenP (construction) and a REST call name the cause and the host setting.
_BAD_HOSTS = {  # cause -> (listener behaviour or None, scheme, words the message must have)
    "refused": (None, "http", "refused"),
    "dns": (None, "https", "DNS"),
    "tls": ("hang up", "https", "TLS"),
    "read timeout": ("silent", "http", "did not answer"),
}


@contextmanager
def _bad_host(cause: str) -> Iterator[str]:
    behaviour, scheme, _ = _BAD_HOSTS[cause]
    if cause == "dns":
        yield f"{scheme}://kis-host.invalid"
    elif behaviour is None:
        yield f"{scheme}://127.0.0.1:{_free_port()}"
    else:
        with _listener(behaviour) as (port, _):
            yield f"{scheme}://127.0.0.1:{port}"


def _assert_names_cause_and_setting(message: str, cause: str) -> None:
    assert _BAD_HOSTS[cause][2] in message, message
    assert "KOREA_INVESTMENT_BASE_URL" in message and "base_url=" in message, message
    if cause == "tls":
        assert "http://" in message  # the likely fix: a plain-HTTP host behind https://
    if cause == "read timeout":
        assert "timeout=" in message


@pytest.mark.parametrize("cause", list(_BAD_HOSTS))
def test_a_failed_token_request_names_its_cause_and_the_host_setting(cause: str, tmp_path) -> None:
    from korea_investment_stock import FileTokenStorage, KoreaInvestment
    from korea_investment_stock.errors import TokenIssueError

    with _bad_host(cause) as url, pytest.raises(TokenIssueError) as caught:
        KoreaInvestment(
            "k" * 36,
            "s" * 180,
            "12345678-01",
            token_storage=FileTokenStorage(tmp_path / "kis" / "token.key"),
            base_url=url,
            timeout=(1.0, 0.3),
        )
    assert "tokenP" in str(caught.value)
    assert getattr(caught.value, "cause", None) == cause
    _assert_names_cause_and_setting(str(caught.value), cause)


@pytest.mark.parametrize("cause", list(_BAD_HOSTS))
def test_a_failed_rest_call_names_its_cause_and_the_host_setting(cause: str, fake_kis) -> None:
    from korea_investment_stock import KoreaInvestment

    with KoreaInvestment(fake_kis.app_key, fake_kis.app_secret, "12345678-01", timeout=(1.0, 0.3)) as kis:
        with _bad_host(cause) as url:
            kis.base_url = url  # the token is in hand; the quotation goes to the bad host
            with pytest.raises(KISConnectionError) as caught:
                kis.fetch_domestic_price("J", "005930")
    assert caught.value.cause == cause
    _assert_names_cause_and_setting(str(caught.value), cause)
