"""The replay server: a thin asyncio shell over websockets' sans-I/O protocol, h11, the engine and
the scheduler.

One TCP port serves both the Realtime WebSocket (`/v1/realtime`, `/openai/realtime`,
`/openai/v1/realtime`) and the cassette's recorded HTTP interactions. Every connection gets its
own engine and scheduler, so concurrent sessions never share state. All decisions live in the
pure objects; this module only moves bytes and keeps time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from replay.cassette import Cassette, Frame, WebSocketSession, expand_audio
from replay.engine import Conversation, Event, Snapshot
from replay.protocol import Dialect, IdFactory
from replay.rules import RuleBook
from replay.scheduler import DEFAULT_IGNORE, ReplayScheduler
from replay.wirelog import WireLog
from replay.wsio import receive_frames, send_pending, serve_connection

REALTIME_PATHS = ("/v1/realtime", "/openai/realtime", "/openai/v1/realtime")
MAX_HEAD = 64 * 1024
MAX_FRAME = 32 * 1024 * 1024  # the API takes 15 MiB of audio per append, ~20 MiB of base64


@dataclass
class ServerOptions:
    speed: float = 1.0
    strict: bool = False
    api_key: str | None = None  # when set, any other key is refused as the real server would
    rules: RuleBook = field(default_factory=RuleBook)
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    audio_quantum_ms: int = 1
    compression: bool = True  # the real server negotiates permessage-deflate
    session_index: int | None = None  # replay this session for every connection
    reject_beta: bool = False  # answer the beta header as the real server has since its retirement
    max_session_s: float = 3600.0  # then `session_expired` and close 1001, as the real API
    seed: int | str | None = None  # ids; None mints fresh ones per connection
    play_user: bool = False  # voice turns on the recorded timeline, whatever audio the client appends
    latency_ms: float = 0.0  # answers to client events (and the cancel tail) go out this late


@dataclass
class Cut:
    """Where the conformance runner barges in, and how long it then watches the client."""

    stop_after: int  # index of the recorded frame after which the user starts speaking
    label: str
    quiet: float = 0.3  # the window closes after this long without a client frame...
    max_window: float = 3.0  # ...or after this long in all


@dataclass
class PreparedSession:
    """A recorded session ready to send: compacted audio expanded, server frames pre-serialized."""

    session: WebSocketSession
    frames: list[Frame]
    wire: list[bytes | None]

    @classmethod
    def build(cls, session: WebSocketSession) -> PreparedSession:
        frames: list[Frame] = []
        wire: list[bytes | None] = []
        for frame in session.frames:
            if frame.event is not None:
                event = expand_audio(frame.event) if frame.source == "server" else frame.event
                frame = Frame(frame.t, frame.source, event=event)
            frames.append(frame)
            if frame.source != "server":
                wire.append(None)
            elif frame.event is not None:
                wire.append(json.dumps(frame.event, ensure_ascii=False, separators=(",", ":")).encode())
            elif frame.binary is not None:
                wire.append(frame.binary)
            else:
                wire.append((frame.text or "").encode())
        return cls(session, frames, wire)


@dataclass
class LiveSession:
    """One connection's state, kept after it ends for reports and tests."""

    index: int
    dialect: Dialect
    path: str
    model: str | None
    engine: Conversation
    scheduler: ReplayScheduler | None
    log: WireLog
    cut: Cut | None = None
    cut_at: float | None = None
    window_closed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str | None = None
    failure: str | None = None  # strict-mode mismatch, or why the server gave up
    prepared: PreparedSession | None = None
    engine_snapshot: Snapshot | None = None  # what the server held when the user barged in


SessionHook = Callable[[LiveSession], Awaitable[None] | None]


class ReplayServer:
    def __init__(
        self,
        cassette: Cassette | None = None,
        options: ServerOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cut: Cut | None = None,
    ) -> None:
        self.cassette = cassette
        self.options = options or ServerOptions()
        self.host = host
        self.port = port
        self.cut = cut
        self.sessions: list[LiveSession] = []
        self.session_started = asyncio.Event()
        self._prepared = [PreparedSession.build(s) for s in cassette.sessions] if cassette else []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections = 0

    # -- lifecycle

    async def start(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def model(self) -> str:
        sessions = self.cassette.sessions if self.cassette else []
        return (sessions[0].model if sessions else None) or "gpt-realtime"

    @property
    def http_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def ws_url(self, model: str | None = None) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime?model={model or self.model}"

    # -- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await serve_connection(reader, writer, lambda head: self._websocket(reader, writer, head),
                                   lambda head: self._http(reader, writer, head))
        finally:
            self._tasks.discard(task)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        request = conn.next_event()
        if not isinstance(request, h11.Request):
            return
        length = int(dict(request.headers).get(b"content-length", b"0") or 0)
        body = await reader.readexactly(length) if length else b""
        conn.receive_data(body)
        status, headers, payload = self._recorded_http(request.method.decode(), request.target.decode())
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding",
                                                                    "content-encoding", "connection")]
        headers += [("content-length", str(len(payload))), ("connection", "close")]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        out += conn.send(h11.Data(data=payload)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out)
        await writer.drain()

    def _recorded_http(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], bytes]:
        path = urlsplit(target).path
        for interaction in self.cassette.http_interactions if self.cassette else []:
            req = interaction["request"]
            if req["method"].upper() == method.upper() and urlsplit(req["uri"]).path == path:
                resp = interaction["response"]
                headers = [(k, v) for k, values in (resp.get("headers") or {}).items()
                           for v in (values if isinstance(values, list) else [values])]
                body = (resp.get("body") or {}).get("string") or ""
                return resp["status"]["code"], headers, body.encode() if isinstance(body, str) else body
        error = {"error": {"message": f"rtreplay: the cassette has no recorded {method} {path}",
                           "type": "invalid_request_error", "param": None, "code": "unknown_url"}}
        return 404, [("content-type", "application/json")], json.dumps(error).encode()

    async def _websocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        protocol = ServerProtocol(
            extensions=[ServerPerMessageDeflateFactory()] if self.options.compression else None,
            select_subprotocol=_select_subprotocol,
            max_size=MAX_FRAME,
        )
        protocol.receive_data(head)
        events = protocol.events_received()
        if not events or not isinstance(events[0], Request):
            return
        request = events[0]
        url = urlsplit(request.path)
        response = protocol.accept(request)
        if response.status_code == 101 and url.path.rstrip("/") not in REALTIME_PATHS:
            response = protocol.reject(404, f"rtreplay serves the Realtime API at {', '.join(REALTIME_PATHS)}\n")
        protocol.send_response(response)
        send_pending(protocol, writer)
        if response.status_code != 101:
            return
        session = self._new_session(request, url.path, parse_qs(url.query))
        connection = _Connection(self, session, protocol, reader, writer)
        await connection.run(self._refusal(request, url.query))

    def _new_session(self, request: Request, path: str, query: dict[str, list[str]]) -> LiveSession:
        index = self._connections
        self._connections += 1
        prepared: PreparedSession | None = None
        if self._prepared:
            chosen = self.options.session_index if self.options.session_index is not None else index
            prepared = self._prepared[chosen % len(self._prepared)]
        dialect: Dialect = "beta" if wants_beta(request.headers) else "ga"
        models = query.get("model") or query.get("deployment")
        model = models[0] if models else None
        seed = self.options.seed if self.options.seed is not None else time.time_ns() + index
        engine = Conversation(dialect, rules=self.options.rules, ids=IdFactory(seed), model=model,
                              audio_quantum_ms=self.options.audio_quantum_ms, created_at=int(time.time()))
        scheduler = None
        if prepared is not None:
            stop_after = self.cut.stop_after if self.cut else None
            scheduler = ReplayScheduler(prepared.frames, speed=self.options.speed, strict=self.options.strict,
                                        ignore=self.options.ignore, stop_after=stop_after)
        session = LiveSession(index, dialect, path, model, engine, scheduler, WireLog(), cut=self.cut,
                              prepared=prepared)
        self.sessions.append(session)
        self.session_started.set()
        return session

    def _refusal(self, request: Request, query: str) -> tuple[str, dict[str, Any]] | None:
        """The rule the real server applies right after the 101 (reference §1.3), if any."""
        key = _api_key(request.headers)
        params = parse_qs(query)
        if not key:
            return "T17-auth", {}
        if self.options.api_key is not None and key != self.options.api_key:
            return "T17-bad-key", {"masked": _masked(key)}
        if not (params.get("model") or params.get("deployment") or params.get("intent")):
            return "T17-missing-model", {}
        if self.options.reject_beta and wants_beta(request.headers):
            return "T17-beta-disabled", {}
        return None


def _select_subprotocol(protocol: ServerProtocol, offered: Any) -> Any:
    """`realtime` when offered (the JS beta client insists on a selected subprotocol)."""
    if "realtime" in offered:
        return "realtime"
    return None


def wants_beta(headers: Headers) -> bool:
    """The beta dialect: `OpenAI-Beta: realtime=v1` or the `openai-beta.realtime-v1` subprotocol."""
    if headers.get("OpenAI-Beta", "").replace(" ", "").lower() == "realtime=v1":
        return True
    return any("openai-beta.realtime-v1" in value for value in headers.get_all("Sec-WebSocket-Protocol"))


def _api_key(headers: Headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip()
    if auth.lower().startswith("basic ") and auth[6:].strip():
        return auth[6:].strip()
    if headers.get("api-key"):
        return headers["api-key"]
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        for proto in value.split(","):
            proto = proto.strip()
            if proto.startswith("openai-insecure-api-key."):
                return proto[len("openai-insecure-api-key."):]
    return None


def _masked(key: str) -> str:
    return f"{key[:3]}...{key[-4:]}" if len(key) > 8 else key


class _Connection:
    """Moves one session's frames between the socket and the pure objects."""

    def __init__(self, server: ReplayServer, session: LiveSession, protocol: ServerProtocol,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.session = session
        self.protocol = protocol
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.wake = asyncio.Event()
        self.last_client_at = self.start
        self._fragments: list[bytes] = []
        self._fragment_op: Opcode | None = None
        prepared = session.prepared
        self.wire = prepared.wire if prepared else []
        self.recorded_close = prepared.session.close if prepared else None

    def now(self) -> float:
        return self.loop.time() - self.start

    async def run(self, refusal: tuple[str, dict[str, Any]] | None) -> None:
        session = self.session
        if refusal is not None:
            self._close_with(refusal[0], **refusal[1])
            await self._drain()
            await self._read_until_closed()
            return
        if session.scheduler is None or not any(f.type == "session.created" for f in session.scheduler.frames):
            for event in self._session_created():
                self._send_event(event, "engine")
        if session.scheduler is not None:
            session.scheduler.start(0.0)
        sender = asyncio.create_task(self._send_loop())
        try:
            await self._read_loop()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            session.close_code = self.protocol.close_code
            session.close_reason = self.protocol.close_reason
            session.window_closed.set()
            session.closed.set()

    def _session_created(self) -> list[Event]:
        """No recorded greeting: the default session of the dialect (beta adds conversation.created)."""
        engine = self.session.engine
        events = [{"type": "session.created", "event_id": engine.ids("event"), "session": engine.session}]
        if engine.dialect == "beta":
            conversation = {"id": engine.ids("conv"), "object": "realtime.conversation"}
            events.append({"type": "conversation.created", "event_id": engine.ids("event"),
                           "conversation": conversation})
        return events

    def _close_with(self, rule_id: str, **fields: Any) -> None:
        """An error frame and, in the same instant, the close the rule says (handshake refusals, expiry)."""
        rules = self.session.engine.rules
        error = rules.error(rule_id, event_id=None, server_event_id=self.session.engine.ids("event"), **fields)
        self._send_event(error, "engine")
        code = rules.rules[rule_id].close or 1000
        reason = rules.close_reason(rule_id, **fields)
        self.protocol.send_close(code, reason)
        send_pending(self.protocol, self.writer)
        self.session.log.mark(self.now(), f"{rule_id}: close {code} {reason}")

    # -- sending

    def _send_event(self, event: Event, origin: str, wire: bytes | None = None) -> None:
        if self.protocol.state is not State.OPEN:
            return
        sent = self.session.engine.send_server(event)
        if wire is None or sent is not event:
            wire = json.dumps(sent, ensure_ascii=False, separators=(",", ":")).encode()
        self.protocol.send_text(wire)
        send_pending(self.protocol, self.writer)
        self.session.log.server(self.now(), sent, origin)

    def _send_recorded(self, index: int, frame: Frame) -> None:
        if frame.event is not None:
            self._send_event(frame.event, "recorded", self.wire[index])
        elif self.protocol.state is State.OPEN:
            data = self.wire[index] or b""
            if frame.binary is not None:
                self.protocol.send_binary(data)
            else:
                self.protocol.send_text(data)
            send_pending(self.protocol, self.writer)
            self.session.log.raw(self.now(), "server", frame.text, frame.binary)

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def _send_loop(self) -> None:
        session = self.session
        scheduler = session.scheduler
        cut = session.cut
        limit = self.server.options.max_session_s
        while self.protocol.state is State.OPEN:
            if self.now() >= limit:
                self._close_with("T18", minutes=f"{limit / 60:g}")
                return
            if scheduler is not None:
                for index, frame in scheduler.due(self.now()):
                    self._send_recorded(index, frame)
                await self._drain()
                if scheduler.cut_reached and cut is not None and session.cut_at is None:
                    self._barge_in(cut)
                    await self._drain()
                if scheduler.exhausted and not scheduler.cut_reached and self.recorded_close \
                        and self.recorded_close.get("by") == "server":
                    code = self.recorded_close.get("code") or 1000
                    # 1005/1006/1015 describe a close that never had a frame: they cannot be sent.
                    self.protocol.send_close(1000 if code in (1005, 1006, 1015) else code,
                                             self.recorded_close.get("reason") or "")
                    send_pending(self.protocol, self.writer)
                    return
            timeout = self._next_timeout()
            self.wake.clear()
            if timeout <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()

    def _next_timeout(self) -> float:
        session = self.session
        deadlines = [self.server.options.max_session_s - self.now()]
        if session.scheduler is not None and (deadline := session.scheduler.next_deadline()) is not None:
            deadlines.append(deadline - self.now())
        if session.cut_at is not None and not session.window_closed.is_set():
            cut = session.cut
            assert cut is not None
            window_end = min(max(self.last_client_at, session.cut_at) + cut.quiet, session.cut_at + cut.max_window)
            remaining = window_end - self.now()
            if remaining <= 0:
                session.window_closed.set()
                session.log.mark(self.now(), "window closed")
            else:
                deadlines.append(remaining)
        return min(deadlines)

    def _barge_in(self, cut: Cut) -> None:
        session = self.session
        session.cut_at = self.now()
        session.engine_snapshot = session.engine.snapshot()
        session.log.mark(session.cut_at, f"cut {cut.label}: the user starts speaking", cut=True)
        for event in session.engine.barge_in():
            self._send_event(event, "barge-in")

    # -- receiving

    async def _read_loop(self) -> None:
        async for frame in receive_frames(self.reader, self.protocol, self.writer):
            self._on_frame(frame.opcode, bytes(frame.data), frame.fin)

    async def _read_until_closed(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._read_loop(), 2.0)

    def _on_frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is Opcode.CONT:
            self._fragments.append(data)
            if not fin:
                return
            opcode, data = self._fragment_op or Opcode.TEXT, b"".join(self._fragments)
            self._fragments, self._fragment_op = [], None
        elif opcode in (Opcode.TEXT, Opcode.BINARY) and not fin:
            self._fragments, self._fragment_op = [data], opcode
            return
        if opcode is Opcode.TEXT:
            try:
                self._on_message(data.decode("utf-8"))
            except UnicodeDecodeError:
                self._on_message(data)
        elif opcode is Opcode.BINARY:
            self._on_message(data)

    def _on_message(self, data: str | bytes) -> None:
        session = self.session
        now = self.now()
        self.last_client_at = now
        received = session.engine.receive_client(data)
        decision = None
        if session.scheduler is not None:
            decision = session.scheduler.receive(received.event, now)
        session.log.client(now, data, received, decision)
        if decision is not None and decision.fail:
            assert decision.divergence is not None
            session.failure = f"strict replay: {decision.divergence.describe()}"
            session.log.mark(now, session.failure)
            self.protocol.send_close(1008, "rtreplay strict: client diverged from the recording"[:120])
            send_pending(self.protocol, self.writer)
            return
        if decision is None or not decision.scripted:
            for event in received.reactions:
                self._send_event(event, "engine")
        if received.type == "session.close":
            self.protocol.send_close(1000, "")
            send_pending(self.protocol, self.writer)
        self.wake.set()


async def serve_forever(server: ReplayServer, on_ready: Callable[[ReplayServer], None] | None = None) -> None:
    await server.start()
    if on_ready is not None:
        on_ready(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
