"""The recording proxy behind ``rtreplay record``.

A client talks to the proxy as if it were the Realtime API; the proxy forwards every frame to the
real upstream unchanged and keeps what passed as a cassette. Towards the client it is websockets'
sans-I/O server (as in `replay.net.server`), so the proxy itself chooses the subprotocol the upstream
chose and forwards close codes and reasons verbatim; towards the upstream it is websockets' asyncio
client. Plain HTTP (ephemeral keys, WebRTC calls) is forwarded with httpx and kept as vcrpy
interactions (vcrpy's cassette format, which vcrpy loads), merged into the same file; nothing is
patched process-wide, so concurrent calls never wait on each other.

Every write is scrubbed (`replay.cassettes.scrub`) and atomic (`write_atomic`): a kill at any moment leaves
the previous file or a complete new one, never half of either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import h11
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Opcode
from websockets.frames import Frame as WsFrame
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from replay import __version__
from replay.cassettes.cassette import Cassette, Frame, Source, WebSocketSession, compact_audio, load
from replay.cassettes.scrub import scrub_cassette
from replay.files import write_atomic
from replay.net.server import MAX_FRAME, MAX_HEAD, url_host, wants_beta
from replay.net.wsio import REQUEST_DEADLINE_S, BodyTooLarge, read_body, receive_frames, send_pending, serve_connection
from replay.text import visible

RECORD_MODES = ("once", "new_episodes", "none", "all", "rewrite")
AudioMode = Literal["compact", "full"]
OPEN_TIMEOUT = 10.0  # the real API answers the upgrade in well under a second
CLOSE_TIMEOUT = 5.0
HTTP_TIMEOUT = 120.0
STOP_REASON = "rtreplay record stopped"
INSECURE_KEY_PREFIX = "openai-insecure-api-key."
# Handshake mechanics the websockets client redoes itself, and proxy-local headers.
NOT_FORWARDED_WS = frozenset({
    "host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "user-agent", "content-length", "transfer-encoding", "keep-alive", "te",
    "proxy-connection",
})
NOT_RECORDED_WS = frozenset({"host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
                             "sec-websocket-extensions", "sec-websocket-accept"})
# accept-encoding is dropped so httpx asks only for encodings it can decode for the client.
HOP_BY_HOP_REQUEST = frozenset({"host", "connection", "keep-alive", "proxy-connection", "te", "trailer",
                                "transfer-encoding", "upgrade", "content-length", "accept-encoding"})
HOP_BY_HOP_RESPONSE = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                                 "transfer-encoding", "upgrade", "content-length", "content-encoding"})
API_PATHS = ("/v1/", "/openai/")  # what the proxy forwards: the Realtime API's paths, OpenAI's and Azure's


class RecorderError(ValueError):
    """Options or an output file the recorder cannot work with; the message says what to change."""


class RecordModeError(RecorderError):
    """The record mode forbids recording into this file (vcrpy/pytest-recording semantics)."""


@dataclass
class RecordingResult:
    """What `RecordingProxy.close` reports: the file (None: nothing recorded, nothing written) and gaps."""

    path: Path | None
    sessions: int
    http: int
    complete: bool
    problems: list[str]
    closed_live: int = 0  # sessions still open at the stop, closed with 1001 going away


class RecordingProxy:
    """Forward a Realtime client to ``upstream`` and record every session and HTTP call it makes.

    Record modes, as in vcrpy / pytest-recording, checked by `start`: ``once`` refuses an existing
    file; ``new_episodes`` appends to it; ``all`` replaces its interactions and keeps its metadata;
    ``rewrite`` starts from nothing; ``none`` refuses to record at all. An existing file is only
    ever replaced by a write that holds something newly recorded, so a run that records nothing
    (an unreachable upstream, say) leaves it as it was.
    """

    def __init__(
        self,
        output: Path,
        *,
        upstream: str = "wss://api.openai.com",
        host: str = "127.0.0.1",
        port: int = 0,
        record_mode: str = "once",
        audio: AudioMode = "compact",
        api_key: str | None = None,
        scrub_env: Sequence[str] = (),
        allow_remote: bool = False,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        if record_mode not in RECORD_MODES:
            raise RecordModeError(f"unknown record mode {record_mode!r}: use one of {', '.join(RECORD_MODES)}")
        if audio not in ("compact", "full"):
            raise RecorderError(f"unknown audio mode {audio!r}: use 'compact' or 'full'")
        if not is_loopback(host) and not allow_remote:
            raise RecorderError(f"--host {host}: the recorder holds your API key, so it listens on this machine "
                                "only (127.0.0.1); --allow-remote serves other machines (they must bring their "
                                "own key: the recorder lends yours only to local clients)")
        self.output = Path(output)
        self.upstream = Upstream.parse(upstream)
        self.host = host
        self.allow_remote = allow_remote
        self.on_notice = on_notice
        self.port = port
        self.record_mode = record_mode
        self.audio = audio
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.scrub_env = tuple(scrub_env)
        self.problems: list[str] = []
        self._base: list[WebSocketSession | dict[str, Any]] = []  # kept from the file (new_episodes)
        self._base_metadata: dict[str, Any] = {}
        self._recorded: list[WebSocketSession | dict[str, Any]] = []
        self._faults: list[str] = []  # what makes the recording incomplete
        self._secrets: set[str] = set()  # credentials seen in flight, scrubbed wherever they appear
        self._live: set[_Relay] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._write_guard = threading.Lock()
        self._generation = 0  # snapshots taken
        self._written = 0  # the newest snapshot on disk
        self._recorded_at = ""
        self._result: RecordingResult | None = None

    # -- lifecycle

    async def start(self) -> RecordingProxy:
        """Check the record mode against the output file, then listen; an unreachable upstream is no error yet."""
        if self._server is not None:
            return self
        self._prepare_output()
        self._recorded_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> RecordingResult:
        """Stop listening, end open sessions (they stay, marked incomplete) and write the cassette."""
        if self._result is not None:
            return self._result
        if self._server is not None:
            self._server.close()
        live = list(self._live)
        for relay in live:
            relay.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2 * CLOSE_TIMEOUT)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        path = self.flush()
        sessions = sum(isinstance(i, WebSocketSession) for i in self._recorded)
        self._result = RecordingResult(path, sessions, len(self._recorded) - sessions, not self._faults,
                                       list(self.problems), len(live))
        return self._result

    async def __aenter__(self) -> RecordingProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def http_base_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}/v1"

    def ws_url(self, model: str = "gpt-realtime") -> str:
        return f"ws://{url_host(self.host)}:{self.port}/v1/realtime?model={model}"

    def _prepare_output(self) -> None:
        if self.record_mode == "none":
            raise RecordModeError(f"{self.output}: record mode 'none' never records; "
                                  "use once, new_episodes, all or rewrite")
        if self.output.is_dir():
            raise RecorderError(f"{self.output}: is a directory, not a cassette file")
        if self.output.exists() and not self.output.is_file():
            raise RecorderError(f"{self.output}: not a regular file, so no cassette can be saved there")
        parent = self.output.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)  # found now, not after the first session
        except OSError as exc:
            raise RecorderError(f"{self.output}: cannot create the directory {parent}: {exc.strerror or exc}") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RecorderError(f"{self.output}: cannot write in {parent}, the cassette could not be saved there")
        if not self.output.exists():
            return
        if self.record_mode == "once":
            raise RecordModeError(f"{self.output} already exists and record mode 'once' never overwrites it; "
                                  "use new_episodes to append, all or rewrite to re-record, or another file")
        if self.record_mode in ("new_episodes", "all"):
            existing = load(self.output)  # a CassetteError names the file and the problem
            self._base_metadata = existing.metadata
            if self.record_mode == "new_episodes":
                self._base = existing.interactions
        # rewrite: start from nothing; the old file is replaced at the first write, or left if nothing is recorded

    # -- writing

    def flush(self) -> Path | None:
        """Write everything recorded so far, scrubbed, atomically; with nothing new recorded write nothing."""
        snapshot = self._snapshot()
        return self._write(*snapshot) if snapshot is not None else None

    async def _flush_between_sessions(self) -> None:
        """Snapshot on the loop, serialize and write in a thread: YAML for a long session takes seconds,
        and live sessions must keep flowing meanwhile. If the disk refuses, say so; `close` tries again."""
        snapshot = self._snapshot()
        if snapshot is None:
            return
        try:
            await asyncio.to_thread(self._write, *snapshot)
        except OSError as exc:
            self.problems.append(f"could not write {self.output}: {exc.strerror or exc}")

    def _snapshot(self) -> tuple[int, Cassette] | None:
        """A scrubbed copy that shares nothing mutable with the live sessions."""
        if not self._recorded:
            return None
        self._generation += 1
        cassette = Cassette(self._metadata(), [*self._base, *self._recorded], self.output)
        return self._generation, scrub_cassette(cassette, extra_values=self._secret_values())

    def _write(self, generation: int, cassette: Cassette) -> Path:
        """Serialize and replace the file; a writer finishing late never overwrites a newer snapshot."""
        text = cassette.dumps()
        with self._write_guard:
            if generation > self._written:
                write_atomic(self.output, text)
                self._written = generation
        return self.output

    def _secret_values(self) -> list[str]:
        values = set(self._secrets)
        if self.api_key:
            values.add(self.api_key)
        values.update(os.environ[name] for name in self.scrub_env if os.environ.get(name))
        return sorted(values)

    def _metadata(self) -> dict[str, Any]:
        base = self._base_metadata
        models = [s.model for s in (*self._base, *self._recorded) if isinstance(s, WebSocketSession) and s.model]
        reasons = [*self._faults, *(relay.in_flight() for relay in self._live)]
        if self.record_mode == "new_episodes" and base.get("complete") is False:
            reasons.insert(0, str(base.get("incomplete_reason") or "an earlier recording was incomplete"))
        metadata: dict[str, Any] = {
            "origin": "recorded",
            "source": "rtreplay record",
            "license": base.get("license"),
            "model": models[0] if models else base.get("model"),
            "recorded_at": self._recorded_at,
            "tool": f"rtreplay {__version__}",
            "audio": self.audio,
            "complete": not reasons,
        }
        if reasons:
            metadata["incomplete_reason"] = "; ".join(reasons)
        extra = {k: v for k, v in base.items() if k not in metadata and k != "incomplete_reason"}
        return {**metadata, **extra}

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    def _refused(self, method: str, target: str, headers: Headers, peer: str) -> tuple[int, str] | None:
        """The gate's answer for one request, said on the console when it refuses."""
        refused = refusal(target, headers, allow_remote=self.allow_remote)
        if refused is not None:
            self._notice(f"refused {method} {visible(target[:200])} from {peer}: {refused[1]}")
        return refused

    def _fault(self, message: str) -> None:
        """A problem that leaves the recording incomplete."""
        self._faults.append(message)
        self.problems.append(message)

    def _stored(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.audio == "full":
            return event
        try:
            return compact_audio(event)
        except ValueError:  # not base64: keep the payload as it was sent
            return event

    def _session_index(self) -> int:
        return sum(isinstance(i, WebSocketSession) for i in (*self._base, *self._recorded))

    # -- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # A bug must not take the proxy down with it; close() reports it.
            await serve_connection(reader, writer, lambda head: self._websocket(reader, writer, head),
                                   lambda head: self._http(reader, writer, head),
                                   on_error=lambda exc: self.problems.append(f"internal error on a connection: "
                                                                             f"{exc!r}"),
                                   on_refused=lambda line: self._notice(f"refused: {line}"))
        finally:
            self._tasks.discard(task)

    async def _websocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        chosen: Subprotocol | None = None

        def select(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
            return chosen  # the client gets what the upstream selected from the same offer, or none

        protocol = ServerProtocol(extensions=[ServerPerMessageDeflateFactory()], select_subprotocol=select,
                                  max_size=MAX_FRAME)
        protocol.receive_data(head)
        events = protocol.events_received()
        if not events or not isinstance(events[0], Request):
            send_pending(protocol, writer)  # the protocol's own 400
            return
        request = events[0]
        peer = _peer(writer)
        self._secrets.update(_credentials(request.headers))
        refused = self._refused("GET", request.path, request.headers, peer)
        if refused is not None:
            protocol.send_response(protocol.reject(refused[0], f"rtreplay record: {refused[1]}\n"))
            send_pending(protocol, writer)
            return
        uri = self.upstream.url(request.path, websocket=True)
        offered = _subprotocols(request.headers)
        try:
            upstream = await _NoRedirects(
                uri,
                additional_headers=self._upstream_headers(request.headers, NOT_FORWARDED_WS, peer),
                subprotocols=[Subprotocol(p) for p in offered] or None,
                user_agent_header=request.headers.get("User-Agent"),
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                max_size=None,  # the upstream is trusted; a retrieved item can be large
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            self._fault(f"{uri}: the upstream refused the WebSocket upgrade with HTTP {status}")
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            protocol.send_response(protocol.reject(status, body or f"upstream answered HTTP {status}\n"))
            send_pending(protocol, writer)
            return
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._fault(f"{uri}: upstream unreachable: {_why(exc)}")
            await self._refuse(protocol, request, reader, writer, f"rtreplay record: upstream unreachable: {_why(exc)}")
            return
        chosen = upstream.subprotocol
        response = protocol.accept(request)
        protocol.send_response(response)
        send_pending(protocol, writer)
        if response.status_code != 101:
            await upstream.close()
            return
        record = WebSocketSession(
            uri=uri,
            dialect="beta" if wants_beta(request.headers) else "ga",
            frames=[],
            request_headers=_header_lists(request.headers, NOT_RECORDED_WS),
            response_headers=_header_lists(upstream.response.headers, NOT_RECORDED_WS) if upstream.response else {},
        )
        relay = _Relay(self, self._session_index(), record, protocol, reader, writer, upstream)
        self._recorded.append(record)
        self._live.add(relay)
        try:
            await relay.run()
        finally:
            self._live.discard(relay)
            await self._flush_between_sessions()

    async def _refuse(self, protocol: ServerProtocol, request: Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, reason: str) -> None:
        """Open the client's socket only to close it with 1011 and the reason, as the API does its errors."""
        response = protocol.accept(request)
        protocol.send_response(response)
        if response.status_code == 101:
            protocol.send_close(CloseCode.INTERNAL_ERROR, _close_reason(reason))
        send_pending(protocol, writer)
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while protocol.state is not State.CLOSED:
                    data = await reader.read(65536)
                    if data:
                        protocol.receive_data(data)
                    else:
                        protocol.receive_eof()
                    protocol.events_received()
                    send_pending(protocol, writer)

    def _upstream_headers(self, headers: Headers, dropped: frozenset[str], peer: str) -> list[tuple[str, str]]:
        """The client's headers, with the user's key only for a client on this machine that brought none."""
        out = [(name, value) for name, value in headers.raw_items() if name.lower() not in dropped]
        if not _credentials(headers) and self.api_key and is_loopback(peer):
            out.append(("Authorization", f"Bearer {self.api_key}"))
        return out

    # -- plain HTTP

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        conn.receive_data(head)
        try:
            request = conn.next_event()
            if not isinstance(request, h11.Request):  # serve_connection let only a whole head through
                raise h11.RemoteProtocolError("not an HTTP request")
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                body = await read_body(conn, request, reader, writer, limit=MAX_FRAME)
        except h11.RemoteProtocolError as exc:
            _respond(conn, writer, 400, *_error(f"rtreplay record: bad HTTP request: {exc}"))
            return
        except BodyTooLarge:
            _respond(conn, writer, 413, *_error(f"rtreplay record: request body over {MAX_FRAME} bytes"))
            return
        except TimeoutError:
            _respond(conn, writer, 408, *_error("rtreplay record: the request body stopped arriving"))
            return
        target = request.target.decode("latin-1")
        method = request.method.decode("latin-1")
        headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers])
        peer = _peer(writer)
        self._secrets.update(_credentials(headers))
        refused = self._refused(method, target, headers, peer)
        if refused is not None:
            _respond(conn, writer, refused[0], *_error(f"rtreplay record: {refused[1]}"))
            return
        status, reply_headers, payload = await self._forward(method, target, headers, body, peer)
        _respond(conn, writer, status, reply_headers, payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _forward(self, method: str, target: str, headers: Headers,
                       body: bytes, peer: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request upstream and keep it, as sent, with its answer, as a vcrpy interaction."""
        url = self.upstream.url(target, websocket=False)
        try:
            # A redirect is the client's to follow: it would carry the key to wherever it points.
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as client:
                response = await client.request(method, url, headers=self._upstream_headers(
                    headers, HOP_BY_HOP_REQUEST, peer), content=body or None)
        except httpx.HTTPError as exc:
            self._fault(f"HTTP {method} {url}: upstream unreachable: {_why(exc)}")
            return 502, *_error(f"rtreplay record: upstream unreachable: {_why(exc)}")
        self._recorded.append(vcr_interaction(response))
        await self._flush_between_sessions()
        reply_headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in HOP_BY_HOP_RESPONSE]
        return response.status_code, reply_headers, response.content


class _Relay:
    """One WebSocket session: two pumps, the recorded frames, and how the session ended."""

    def __init__(self, proxy: RecordingProxy, index: int, record: WebSocketSession, protocol: ServerProtocol,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: ClientConnection) -> None:
        self.proxy = proxy
        self.index = index
        self.record = record
        self.protocol = protocol
        self.reader = reader
        self.writer = writer
        self.upstream = upstream
        self.loop = asyncio.get_running_loop()
        self.opened = self.loop.time()
        self.ended = False
        self._stop = asyncio.Event()
        self._fragments: list[bytes] = []
        self._fragment_op: Opcode | None = None

    def now(self) -> float:
        return self.loop.time() - self.opened

    def stop(self) -> None:
        self._stop.set()

    def in_flight(self) -> str:
        return f"session {self.index} was still open at t={self.now():.3f}s when the cassette was written"

    def _end(self, *, close: dict[str, Any] | None = None, fault: str | None = None) -> bool:
        """Record how the session ended; the first ending wins, later ones are its echoes."""
        if self.ended:
            return False
        self.ended = True
        self.record.close = close
        if fault is not None:
            self.proxy._fault(f"session {self.index}: {fault} at t={self.now():.3f}s")
        return True

    def _keep(self, source: Source, message: str | bytes) -> None:
        """Append at once: the two pumps interleave, and times must never go back."""
        t = self.now()
        if isinstance(message, bytes):
            self.record.frames.append(Frame(t, source, binary=message))
            return
        event = _event(message)
        if event is None:
            self.record.frames.append(Frame(t, source, text=message))
        else:
            self.record.frames.append(Frame(t, source, event=self.proxy._stored(event)))

    async def run(self) -> None:
        pumps = {asyncio.create_task(self._from_client()), asyncio.create_task(self._from_upstream())}
        stopping = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait({*pumps, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                await self._shut_down()
            await asyncio.wait(pumps, timeout=CLOSE_TIMEOUT)
        finally:
            for task in (*pumps, stopping):
                task.cancel()
            for outcome in await asyncio.gather(*pumps, stopping, return_exceptions=True):
                if isinstance(outcome, Exception):
                    self.proxy._fault(f"session {self.index}: internal error: {outcome!r}")
            if self.upstream.state is not State.CLOSED:
                self.upstream.transport.abort()
            self._end(fault="the session did not finish its closing handshake")

    async def _shut_down(self) -> None:
        self._end(fault="the recording stopped while the session was open")
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(CloseCode.GOING_AWAY, STOP_REASON)
            send_pending(self.protocol, self.writer)
        await self.upstream.close(CloseCode.GOING_AWAY, STOP_REASON)

    # -- client to upstream

    async def _from_client(self) -> None:
        protocol = self.protocol
        async for frame in receive_frames(self.reader, protocol, self.writer):
            await self._client_frame(frame)
        if protocol.close_rcvd is None:
            sent = protocol.close_sent  # set when the protocol failed the client (bad frame, too large)
            fault = (f"the client's connection failed ({sent.code} {sent.reason})" if sent is not None
                     else "the client dropped the connection without a close frame")
            if self._end(fault=fault):
                self.upstream.transport.abort()  # the upstream sees the drop the client caused

    async def _client_frame(self, frame: WsFrame) -> None:
        opcode, data = frame.opcode, bytes(frame.data)
        if opcode is Opcode.CLOSE:
            await self._client_closed()
            return
        if opcode is Opcode.CONT:
            self._fragments.append(data)
            if not frame.fin:
                return
            opcode, data = self._fragment_op or Opcode.TEXT, b"".join(self._fragments)
            self._fragments, self._fragment_op = [], None
        elif opcode in (Opcode.TEXT, Opcode.BINARY) and not frame.fin:
            self._fragments, self._fragment_op = [data], opcode
            return
        if opcode is Opcode.TEXT:
            try:
                message: str | bytes = data.decode("utf-8")
            except UnicodeDecodeError:
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
                return
        elif opcode is Opcode.BINARY:
            message = data
        else:
            return  # ping and pong: the sans-I/O protocol answers pings itself
        self._keep("client", message)
        with contextlib.suppress(ConnectionClosed):
            await self.upstream.send(message)

    async def _client_closed(self) -> None:
        rcvd = self.protocol.close_rcvd
        assert rcvd is not None
        code = None if rcvd.code == CloseCode.NO_STATUS_RCVD else rcvd.code
        if self._end(close={"code": code, "reason": rcvd.reason, "by": "client"}):
            # an empty close frame goes on as a plain 1000: the asyncio client always sends a code
            await self.upstream.close(code or CloseCode.NORMAL_CLOSURE, rcvd.reason)

    # -- upstream to client

    async def _from_upstream(self) -> None:
        protocol = self.protocol
        with contextlib.suppress(ConnectionClosed):
            async for message in self.upstream:
                self._keep("server", message)
                if protocol.state is not State.OPEN:
                    continue
                if isinstance(message, str):
                    protocol.send_text(message.encode("utf-8"))
                else:
                    protocol.send_binary(message)
                send_pending(protocol, self.writer)
                with contextlib.suppress(ConnectionError):
                    await self.writer.drain()
        rcvd = self.upstream.protocol.close_rcvd
        if rcvd is None:
            if self._end(fault="the upstream dropped the connection without a close frame"):
                self.writer.transport.abort()  # the client sees the drop the upstream caused
            return
        code = None if rcvd.code == CloseCode.NO_STATUS_RCVD else rcvd.code
        if self._end(close={"code": code, "reason": rcvd.reason, "by": "server"}) and protocol.state is State.OPEN:
            protocol.send_close(code, rcvd.reason if code is not None else "")
            send_pending(protocol, self.writer)


async def run_until_signalled(proxy: RecordingProxy,
                              on_ready: Callable[[RecordingProxy], None] | None = None) -> RecordingResult:
    """Record until SIGINT, SIGTERM or SIGHUP, then write the cassette (sessions still open are marked incomplete)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await proxy.start()
        if on_ready is not None:
            on_ready(proxy)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        result = await proxy.close()  # also on cancellation: what was recorded is written
    return result


# ---------------------------------------------------------------------------- helpers


def vcr_interaction(response: httpx.Response) -> dict[str, Any]:
    """One HTTP exchange in vcrpy's cassette format (what vcrpy writes with ``decode_compressed_response``).

    The body is as the client reads it: httpx has decoded any content encoding, so the header that
    announced one goes, and the length is the decoded one.
    """
    request = response.request
    content = response.content
    reply = {name: values for name, values in _multi(response.headers).items()
             if name.lower() not in ("content-encoding", "content-length")}
    if "content-encoding" in response.headers or "content-length" in response.headers:
        reply["content-length"] = [str(len(content))]
    return {
        "request": {"method": request.method, "uri": str(request.url), "body": _vcr_body(request.content) or None,
                    "headers": _multi(request.headers)},
        "response": {"status": {"code": response.status_code, "message": response.reason_phrase},
                     "headers": reply, "body": {"string": _vcr_body(content)}},
    }


def _multi(headers: httpx.Headers) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        out.setdefault(name, []).append(value)
    return out


def _vcr_body(data: bytes) -> str | bytes:
    """Text as text, anything else as bytes (YAML ``!!binary``), as vcrpy keeps bodies."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


@dataclass(frozen=True)
class Upstream:
    """The one place the proxy sends anything, the user's key included; every URL it builds is checked to be here."""

    secure: bool
    netloc: str  # host[:port], as the user wrote it (no user info)
    hostname: str
    port: int | None
    base_path: str  # a prefix before the client's path (a gateway's), usually empty

    @classmethod
    def parse(cls, upstream: str) -> Upstream:
        """``wss://api.openai.com`` (also ws, http, https); cleartext only to this machine, where no key is exposed."""
        example = "expected a URL like wss://api.openai.com or ws://127.0.0.1:8765"
        try:
            parts = urlsplit(upstream)
            port = parts.port
        except ValueError:
            raise RecorderError(f"upstream {upstream!r}: {example}") from None
        if (parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname or parts.query
                or parts.fragment or "@" in parts.netloc):
            raise RecorderError(f"upstream {upstream!r}: {example}")
        secure = parts.scheme in ("wss", "https")
        if not secure and not is_loopback(parts.hostname):
            raise RecorderError(f"upstream {upstream!r}: the key would cross the network in clear text; "
                                f"use wss:// (ws:// is for a server on this machine)")
        return cls(secure, parts.netloc, parts.hostname, port, parts.path.rstrip("/"))

    def url(self, target: str, *, websocket: bool) -> str:
        """The upstream URL for a request target the gate admitted: host and port from here, never from the client."""
        parts = _api_target(target)
        if parts is None:
            raise RecorderError(f"not an API path: {visible(target)}")
        scheme = ("wss" if self.secure else "ws") if websocket else ("https" if self.secure else "http")
        url = urlunsplit((scheme, self.netloc, self.base_path + parts.path, parts.query, ""))
        built = urlsplit(url)
        if built.hostname != self.hostname or built.port != self.port or "@" in built.netloc:
            raise RecorderError(f"refusing to build an upstream URL off {self.netloc}: {visible(url)}")
        return url


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1``: addresses no other machine can reach."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_target(target: str) -> SplitResult | None:
    """An origin-form target on the API (``/v1/realtime?model=...``), or None.

    The target is what a client sends after the method; it must never name a host: no absolute or
    authority form (``@host/...``, ``//host/...``, ``http://host/...``), no dot segments, no backslash.
    """
    if not target.startswith("/") or target.startswith("//") or "\\" in target or "#" in target:
        return None
    if any(not 0x21 <= ord(c) <= 0x7E for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(API_PATHS):
        return None
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return None
    return parts


def _host_name(value: str) -> str | None:
    """The host of a ``Host`` header or an origin's authority, without the port."""
    try:
        return urlsplit(f"//{value}").hostname
    except ValueError:
        return None


def refusal(target: str, headers: Headers, *, allow_remote: bool = False) -> tuple[int, str] | None:
    """Why the proxy refuses a request, as (status, message), or None to forward it.

    Pure policy, the recorder's gate. A web page's script can reach a port on 127.0.0.1 (its
    WebSocket sends ``Origin``; a DNS-rebound page sends its own name as ``Host``), so a request
    from any origin but this machine's, or naming a host that is not this machine, is refused
    before anything leaves, and a target that is not an API path never becomes a URL.
    """
    if _api_target(target) is None:
        return 404, f"rtreplay record forwards the API's paths ({', '.join(p + '...' for p in API_PATHS)}) only"
    hosts = headers.get_all("Host")
    host = _host_name(hosts[0]) if len(hosts) == 1 else None
    if host is None:
        return 400, "a request needs exactly one Host header"
    if not is_loopback(host) and not (allow_remote and _is_ip(host)):
        return 403, f"Host {visible(hosts[0])!r} is not this machine (a DNS-rebound page?)"
    origins = headers.get_all("Origin")
    if len(origins) > 1:
        return 403, "more than one Origin header"
    if origins:
        parts = urlsplit(origins[0]) if origins[0] != "null" else None
        origin_host = _host_name(parts.netloc) if parts is not None and parts.scheme in ("http", "https") else None
        if origin_host is None or not is_loopback(origin_host):
            return 403, f"Origin {visible(origins[0])!r} is not this machine: a web page may not use the recorder"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class _NoRedirects(connect):
    """websockets follows redirects with the same headers, the key among them, to any host: never here."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def _peer(writer: asyncio.StreamWriter) -> str:
    """The client's address; a Unix socket or an unknown peer is not taken for this machine."""
    peername = writer.get_extra_info("peername")
    return str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"


def _subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",") if p.strip()]


def _credentials(headers: Headers) -> list[str]:
    """Every key the client presented: Authorization, api-key, and the browser subprotocol form."""
    found = []
    for value in headers.get_all("Authorization"):
        scheme, _, token = value.partition(" ")
        found.append(token.strip() if scheme.lower() in ("bearer", "basic") and token.strip() else value)
    found += headers.get_all("api-key")
    found += [p[len(INSECURE_KEY_PREFIX):] for p in _subprotocols(headers) if p.startswith(INSECURE_KEY_PREFIX)]
    return [value for value in found if value]


def _header_lists(headers: Headers, dropped: frozenset[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers.raw_items():
        if name.lower() not in dropped:
            out.setdefault(name, []).append(value)
    return out


def _event(text: str) -> dict[str, Any] | None:
    """A text frame holding a JSON object with a string ``type`` is an event; anything else stays text."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("type"), str) else None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _close_reason(text: str) -> str:
    """Close reasons are limited to 123 bytes of UTF-8."""
    data = text.encode("utf-8")[:123]
    return data.decode("utf-8", "ignore")


def _error(message: str) -> tuple[list[tuple[str, str]], bytes]:
    """An error body shaped like the API's own, so SDKs show the message."""
    body = {"error": {"message": message, "type": "rtreplay_proxy_error", "param": None, "code": None}}
    return [("content-type", "application/json")], json.dumps(body).encode()


def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]],
             payload: bytes) -> None:
    headers = [*headers, ("content-length", str(len(payload))), ("connection", "close")]
    try:
        out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        out += conn.send(h11.Data(data=payload)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return  # the connection is past answering; closing it is all that is left
    writer.write(out)

