"""Bytes between an asyncio stream and websockets' sans-I/O protocol: what the replay server and
the recording proxy both do on the client's side of a connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus

import h11
from websockets.frames import Frame
from websockets.protocol import State
from websockets.server import ServerProtocol

from replay.text import clip

HEAD_TIMEOUT_S = 10.0  # to send a request head: a connection silent longer holds a descriptor for nothing
WRITE_STALL_S = 30.0  # seconds a client may take nothing we send before it is dropped
IDLE_TIMEOUT_S = 10.0  # plain HTTP: a body that stops arriving, or a response nobody reads, this long is closed
REQUEST_DEADLINE_S = 60.0  # plain HTTP: a whole request body, however it trickles in


def send_pending(protocol: ServerProtocol, writer: asyncio.StreamWriter) -> None:
    """Write what the protocol queued; its empty chunk means half-close (the server closes TCP first)."""
    chunks = protocol.data_to_send()
    data = b"".join(chunks)
    if data:
        writer.write(data)  # one write: one send() for all the frames queued since the last
    if chunks and not chunks[-1] and writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


async def drain(writer: asyncio.StreamWriter, stall_s: float = WRITE_STALL_S) -> bool:
    """Wait for the client to take what was written; False when it took nothing for ``stall_s``.

    A client that stops reading would hold its session (and a descriptor) in ``drain`` forever: a
    stalled one is dropped, as a real server drops a peer whose window stays shut. A gone one is True:
    the read side sees the end.
    """
    try:
        async with asyncio.timeout(stall_s):
            await writer.drain()
    except ConnectionError:
        return True
    except TimeoutError:
        writer.transport.abort()
        return False
    return True


async def receive_frames(reader: asyncio.StreamReader, protocol: ServerProtocol,
                         writer: asyncio.StreamWriter, stall_s: float = WRITE_STALL_S) -> AsyncIterator[Frame]:
    """Every frame the client sends, until the connection is over (EOF, or the closing handshake)."""
    while True:
        try:
            data = await reader.read(65536)
        except ConnectionError:
            data = _buffered(reader)  # the next read raises again, with nothing left: EOF
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        for frame in protocol.events_received():
            if isinstance(frame, Frame):
                yield frame
        send_pending(protocol, writer)
        if not await drain(writer, stall_s):
            return
        if not data or protocol.state is State.CLOSED or protocol.close_expected():
            return  # the server closes TCP once the closing handshake is done (RFC 6455 §7.1.1)


def _buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes that arrived before a connection reset and were never read.

    asyncio's ``read`` raises the stored reset before returning what it already buffered, so a
    client's last frame before an abrupt close (a crash right after its ``conversation.item.delete``)
    would be lost. The buffer is asyncio's private ``_buffer``; without it, nothing is salvaged.
    """
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytearray) or not buffer:
        return b""
    data = bytes(buffer)
    buffer.clear()
    return data


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           websocket: Callable[[bytes], Awaitable[None]], http: Callable[[bytes], Awaitable[None]],
                           on_error: Callable[[Exception], None] | None = None, *,
                           head_timeout: float = HEAD_TIMEOUT_S,
                           on_refused: Callable[[str], None] | None = None) -> None:
    """Read the request head, hand the connection to the WebSocket or the plain-HTTP side, close it.

    A head that does not arrive within ``head_timeout`` seconds (a slow or silent client holding a
    descriptor) closes the connection; one that is not HTTP/1.1 (a bad request line, a TLS ClientHello,
    conflicting lengths, no Host) is answered ``400``, one over the reader's limit ``431``, and only
    well-formed heads reach the handlers. ``on_refused`` gets one line for each.
    """
    try:
        try:
            async with asyncio.timeout(head_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            _refused(on_refused, writer, f"no complete request head within {head_timeout:g} s: closed")
            return
        except asyncio.LimitOverrunError:
            writer.write(plain_response(431, "the request head is too large"))
            _refused(on_refused, writer, "431 Request Header Fields Too Large")
            return
        problem = bad_head(head)
        if problem is not None:
            writer.write(plain_response(400, problem))
            _refused(on_refused, writer, f"400 Bad Request ({problem})")
            return
        await (websocket(head) if b"upgrade: websocket" in head.lower() else http(head))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    except asyncio.CancelledError:
        pass  # shutdown cancels live connections; asyncio's stream callback must not see it re-raised
    except Exception as exc:
        if on_error is None:
            raise
        on_error(exc)
    finally:
        writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):  # shutting down: the task ends here
            await writer.wait_closed()


class BodyTooLarge(Exception):
    """A plain-HTTP request body over the reader's limit (answered 413)."""


async def read_body(conn: h11.Connection, request: h11.Request, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, *, limit: int, idle_timeout: float = IDLE_TIMEOUT_S) -> bytes:
    """A request body as it comes: a declared length over ``limit`` is refused before any of it is read.

    Raises `BodyTooLarge`, `TimeoutError` when no byte arrives for ``idle_timeout`` seconds, or h11's
    `RemoteProtocolError` for a connection that ends mid-request. ``Expect: 100-continue`` is answered.
    """
    if any(name == b"content-length" and int(value) > limit for name, value in request.headers):
        raise BodyTooLarge
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            async with asyncio.timeout(idle_timeout):
                conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                raise BodyTooLarge
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise h11.RemoteProtocolError("the connection closed before the request was complete")


def bad_head(head: bytes) -> str | None:
    """Why a request head is not one HTTP/1.1 request h11 accepts, or None."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return clip(str(exc), 200)
    return None if isinstance(event, h11.Request) else "not an HTTP request"


def plain_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A complete response that closes the connection (the request may be unusable)."""
    body = f"{text}\n".encode("utf-8", "backslashreplace")
    reason = HTTPStatus(status).phrase
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")]
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def peer_of(writer: asyncio.StreamWriter) -> str:
    """The client's address as ``host:port`` (``[v6]:port``), for console lines."""
    peer = writer.get_extra_info("peername")
    if not isinstance(peer, tuple) or len(peer) < 2:
        return "?"
    host = str(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


def _refused(on_refused: Callable[[str], None] | None, writer: asyncio.StreamWriter, what: str) -> None:
    if on_refused is not None:
        on_refused(f"{peer_of(writer)}: {what}")
