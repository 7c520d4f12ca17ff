"""Bytes between an asyncio stream and websockets' sans-I/O protocol: what the replay server and
the recording proxy both do on the client's side of a connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from websockets.frames import Frame
from websockets.protocol import State
from websockets.server import ServerProtocol


def send_pending(protocol: ServerProtocol, writer: asyncio.StreamWriter) -> None:
    """Write what the protocol queued; its empty chunk means half-close (the server closes TCP first)."""
    chunks = protocol.data_to_send()
    data = b"".join(chunks)
    if data:
        writer.write(data)  # one write: one send() for all the frames queued since the last
    if chunks and not chunks[-1] and writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


async def receive_frames(reader: asyncio.StreamReader, protocol: ServerProtocol,
                         writer: asyncio.StreamWriter) -> AsyncIterator[Frame]:
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
        with contextlib.suppress(ConnectionError):
            await writer.drain()
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
                           on_error: Callable[[Exception], None] | None = None) -> None:
    """Read the request head, hand the connection to the WebSocket or the plain-HTTP side, close it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        await (websocket(head) if b"upgrade: websocket" in head.lower() else http(head))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
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
