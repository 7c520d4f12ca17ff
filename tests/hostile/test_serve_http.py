"""The replay server's plain-HTTP side and request heads under hostile clients: bounded reads, clear refusals."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from replay.net.server import MAX_BODY, ReplayServer, ServerOptions


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


async def test_a_declared_body_over_the_cap_is_refused_413_before_any_of_it_is_read() -> None:
    """300 MB announced, none sent: the answer comes at once (today the server waits to read it all)."""
    lines: list[str] = []
    async with ReplayServer(None, ServerOptions(on_event=lines.append)) as server:
        head = (b"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 314572800\r\n\r\n")
        answer = await asyncio.to_thread(_exchange, server.port, head)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert [line for line in lines if "413" in line] and "Traceback" not in "".join(lines)


async def test_a_chunked_body_over_the_cap_is_refused_and_not_read_on() -> None:
    """Chunks past 1 MiB get 413; the server then stops reading, so a client pushing 256 MiB more fails."""
    async with ReplayServer(None, ServerOptions()) as server:
        def attack() -> tuple[bytes, int]:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(b"POST /v1/realtime/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
                sent = 0
                try:
                    for _ in range(4096):  # 256 MiB at most; the server reads 1 MiB and a little more
                        sock.sendall(chunk)
                        sent += len(chunk)
                except OSError:  # reset, broken pipe, or the send blocked for 10 s: nobody reads
                    pass
                try:
                    answer = _read_all(sock)
                except OSError:
                    answer = b""
                return answer, sent

        answer, sent = await asyncio.to_thread(attack)
    assert sent < 128 * MAX_BODY, sent
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413 "), answer[:200]


async def test_a_body_that_stops_arriving_is_answered_408() -> None:
    async with ReplayServer(None, ServerOptions(idle_timeout_s=0.5)) as server:
        started = time.monotonic()
        answer = await asyncio.to_thread(_exchange, server.port,
                                         b"POST /v1/realtime/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 8  # bounded: not the 60 s request deadline, let alone forever


@pytest.mark.parametrize("sent", [b"", b"GET /v1/realtime?model=x HTTP/1.1\r\nHost: x\r\n"])
async def test_a_connection_without_a_full_head_is_closed_after_the_head_timeout(sent: bytes) -> None:
    lines: list[str] = []
    async with ReplayServer(None, ServerOptions(head_timeout_s=0.5, on_event=lines.append)) as server:
        answer = await asyncio.to_thread(_exchange, server.port, sent, 10.0)  # socket.timeout if never closed
    assert answer == b""
    assert len(lines) == 1 and "no complete request head within 0.5 s" in lines[0], lines


async def test_a_head_over_64_kib_is_answered_431() -> None:
    async with ReplayServer(None, ServerOptions()) as server:
        answer = await asyncio.to_thread(_exchange, server.port,
                                         b"GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


async def test_a_client_waiting_for_100_continue_gets_it_then_its_answer() -> None:
    """As curl does for bodies over 1 KiB: the body follows the server's 100 (today: both sides wait)."""
    def client(port: int) -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         b"Content-Length: 2\r\n\r\n")
            interim = sock.recv(4096)
            sock.sendall(b"{}")
            return interim, _read_all(sock)

    async with ReplayServer(None, ServerOptions()) as server:
        interim, answer = await asyncio.to_thread(client, server.port)
    assert interim.startswith(b"HTTP/1.1 100 "), interim
    assert answer.startswith(b"HTTP/1.1 404 ") and b'"code": "unknown_url"' in answer, answer
