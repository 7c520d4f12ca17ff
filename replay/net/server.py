"""The replay server: a thin asyncio shell over websockets' sans-I/O protocol, h11, the engine and
the players.

One TCP port serves both the Realtime WebSocket (`/v1/realtime`, `/openai/realtime`,
`/openai/v1/realtime`) and the cassette's recorded HTTP interactions. Every connection gets its
own engine, so concurrent sessions never share state. The engine is the server: the recording is
data about the model (its responses, played when the live conversation starts one) and the user
(their turns); every frame is rendered by the engine in the client's dialect. This module only
moves bytes and keeps time.

It decides nothing about a conformance case: whoever plays the user of a connection (the harness of
:mod:`replay.conformance.harness`, given as ``ReplayServer(harness=...)``) is a :class:`Harness`,
told what the server did, and acts through the :class:`Floor` the server offers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import re
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

import h11
from vcr import matchers as vcr_matchers
from vcr.request import Request as VcrRequest
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from replay.cassettes.cassette import Cassette
from replay.engine.conversation import Conversation, Event, Received
from replay.engine.matching import DEFAULT_IGNORE, Divergence, StrictMatcher
from replay.engine.player import ResponsePlayer, Speech, User
from replay.engine.script import Script, script_of
from replay.net.wirelog import WireLog
from replay.net.wsio import (
    HEAD_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    REQUEST_DEADLINE_S,
    WRITE_STALL_S,
    BodyTooLarge,
    drain,
    peer_of,
    plain_response,
    read_body,
    receive_frames,
    send_pending,
    serve_connection,
)
from replay.text import clip, shown
from replay.wire.dialect import neutral_name
from replay.wire.protocol import AUDIO_DELTA_TYPES, Dialect, IdFactory
from replay.wire.rules import RuleBook

REALTIME_PATHS = ("/v1/realtime", "/openai/realtime", "/openai/v1/realtime")
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024  # a plain-HTTP request body (client_secrets, calls' SDP): 1 MiB is plenty; more is 413
GOING_AWAY_S = 1.0  # on shutdown, how long clients get to answer the 1001 close
STARVED_EVERY_S = 10.0  # at most one "out of file descriptors" line this often
STARVED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
MAX_FRAME = 32 * 1024 * 1024  # the API takes 15 MiB of audio per append, ~20 MiB of base64
EARLY_S = 0.001  # model output due within this is sent now (timers wake late; this centres the lateness)
_SURROGATE = re.compile("[\ud800-\udfff]")

logger = logging.getLogger(__name__)


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
    latency_ms: float = 0.0  # every frame reaches the client this late, and a cancel takes twice as long
    on_event: Callable[[str], None] | None = None  # one line per connection and per divergence, for `serve`
    # Finished sessions kept in `ReplayServer.sessions` (None: all, for the runner and tests that read them
    # after the connection; a long-running `serve` keeps none, so its memory does not grow per session).
    finished_kept: int | None = None
    head_timeout_s: float = HEAD_TIMEOUT_S
    write_stall_s: float = WRITE_STALL_S  # a client that takes nothing this long is dropped
    idle_timeout_s: float = IDLE_TIMEOUT_S


@dataclass
class LiveSession:
    """One connection's state, kept after it ends for reports and tests."""

    index: int
    dialect: Dialect
    path: str
    model: str | None
    engine: Conversation
    script: Script | None
    log: WireLog
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str | None = None
    failure: str | None = None  # strict-mode mismatch, or why the server gave up
    responses_started: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    client: str = ""  # the client's address


SessionHook = Callable[[LiveSession], Awaitable[None] | None]


class Floor(Protocol):
    """What the server offers the user of one connection: what it holds, and the user starting to speak.

    A real server's side of a spoken turn (speech started, stopped, the commit and the response it
    starts) is :meth:`barge_in`; everything else is for reading.
    """

    @property
    def engine(self) -> Conversation: ...

    @property
    def script(self) -> Script | None: ...

    @property
    def user(self) -> User | None: ...

    @property
    def responses_started(self) -> int: ...

    def now(self) -> float:
        """Seconds since the socket opened."""
        ...

    def busy(self) -> bool:
        """Something is due on the server's side: output playing, the user speaking or about to, answers in flight."""
        ...

    def heard_at(self) -> float:
        """When the session last moved: a client frame (audio appends aside) or an event the server made."""
        ...

    def barge_in(self, now: float, note: str) -> None:
        """The user starts speaking at ``now`` (the next recorded turn, if any); ``note`` marks it in the log."""
        ...

    def mark(self, now: float, note: str) -> None:
        """A line in the session's wire log."""
        ...


class Harness(Protocol):
    """The user of one connection, as the server calls it (:mod:`replay.conformance.harness` is one).

    Each hook runs synchronously where the server observed the thing, so what the harness does
    through the :class:`Floor` happens right there: after that event, in that tick.
    """

    def opened(self, floor: Floor) -> None: ...

    def sent(self, etype: str, count: int) -> None:
        """The server just made its ``count``-th event of type ``etype`` (GA name)."""
        ...

    def played(self, response: int, step: int) -> None:
        """The server just played step ``step`` (-1: response.created) of its ``response``-th response."""
        ...

    def tick(self, now: float) -> None:
        """The end of a tick of the server's clock."""
        ...

    def deadline(self) -> float | None:
        """When the harness next wants a tick (seconds since the socket opened), if ever."""
        ...

    def ended(self) -> None:
        """The connection is over."""
        ...


HarnessFactory = Callable[[LiveSession], Harness]


class ReplayServer:
    def __init__(
        self,
        cassette: Cassette | None = None,
        options: ServerOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        harness: HarnessFactory | None = None,
    ) -> None:
        self.cassette = cassette
        self.options = options or ServerOptions()
        self.host = host
        self.port = port
        self.harness = harness  # a user for each connection (the conformance harness), if any
        self.sessions: list[LiveSession] = []
        self.session_started = asyncio.Event()
        self.scripts = [script_of(cassette, i) for i in range(len(cassette.sessions))] if cassette else []
        self.http = RecordedHttp(cassette.http_interactions if cassette else [])
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: set[_Connection] = set()
        self._connections = 0
        self._starved_at: float | None = None  # when the last "out of file descriptors" line was printed
        self._starved_missed = 0  # accept() failures since that line

    # -- lifecycle

    async def start(self) -> ReplayServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self, *, going_away: bool = False) -> int:
        """Stop listening and end every connection; with ``going_away``, how many live sessions were closed 1001.

        Without it the sockets are dropped (a test's way to cut a connection). With it, as a server
        shutting down (`serve` stopped), each live session is told so and gets a moment to answer the close.
        """
        if self._server is not None:
            self._server.close()
        going = self.end_sessions("rtreplay: the server is shutting down", code=1001) if going_away else 0
        if going and self._tasks:
            await asyncio.wait(set(self._tasks), timeout=GOING_AWAY_S)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        return going

    def end_sessions(self, reason: str = "rtreplay: the case is over", code: int = 1000) -> int:
        """Close every live session (normally: 1000), as a server ending the conversation would; how many."""
        live = [c for c in self._live if c.protocol.state is State.OPEN]
        for connection in live:
            connection.end(reason, code)
        return len(live)

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
        return f"http://{url_host(self.host)}:{self.port}/v1"

    def ws_url(self, model: str | None = None) -> str:
        return f"ws://{url_host(self.host)}:{self.port}/v1/realtime?model={quote(model or self.model, safe='-._~:')}"

    def _say(self, line: str) -> None:
        """One console line (`serve`); whatever a client sent in it is already made visible and cut."""
        if self.options.on_event is not None:
            self.options.on_event(line)

    def out_of_descriptors(self, exc: OSError) -> None:
        """accept() failed for want of descriptors: one line now and then, not a traceback per attempt.

        asyncio stops accepting for a second and retries by itself; each silent connection is closed
        after the head timeout, so the server serves again once descriptors free up.
        """
        now = time.monotonic()
        if self._starved_at is None:
            asyncio.get_running_loop().call_later(1.0, self._probe_descriptors)
        elif now - self._starved_at < STARVED_EVERY_S:
            self._starved_missed += 1
            return
        again = f" ({self._starved_missed} more attempt(s) failed since the last line)" if self._starved_missed else ""
        self._starved_at, self._starved_missed = now, 0
        name = errno.errorcode.get(exc.errno or 0, "?")
        self._say(f"out of file descriptors ({name}: {exc.strerror}): new connections wait until some close "
                  f"(a silent one is closed after {self.options.head_timeout_s:g} s){again}")

    def _probe_descriptors(self) -> None:
        """Once a descriptor can be had again, say so (asyncio's own retry accepts within a second)."""
        try:
            socket.socket().close()
        except OSError:
            asyncio.get_running_loop().call_later(1.0, self._probe_descriptors)
            return
        self._starved_at, self._starved_missed = None, 0
        self._say("descriptors are free again: accepting connections")

    # -- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = peer_of(writer)

        def internal(exc: Exception) -> None:
            logger.debug("internal error on a connection from %s", peer, exc_info=exc)
            self._say(f"{peer}: internal error: {type(exc).__name__}: {shown(str(exc), 300)}")

        try:
            await serve_connection(reader, writer, lambda head: self._websocket(reader, writer, head),
                                   lambda head: self._http(reader, writer, head),
                                   on_error=internal if self.options.on_event is not None else None,
                                   head_timeout=self.options.head_timeout_s,
                                   on_refused=lambda line: self._say(f"refused {shown(line, 300)}"))
        finally:
            self._tasks.discard(task)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        """One request, one response, close: the body capped at MAX_BODY, and never waited for forever."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        conn.receive_data(head)
        request = conn.next_event()
        if not isinstance(request, h11.Request):
            return
        method, target = request.method.decode("ascii", "replace"), request.target.decode("ascii", "replace")
        peer, what = peer_of(writer), f"{method} {target}"
        refusal = self._http_refusal(request)
        if refusal is not None:
            await _refuse_http(writer, 401, json.dumps(refusal), "application/json")
            self._say(f"refused {peer}: {shown(what, 300)}: 401 ({refusal['error']['code'] or 'no key'})")
            return
        try:
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                body = await read_body(conn, request, reader, writer, limit=MAX_BODY,
                                       idle_timeout=self.options.idle_timeout_s)
        except BodyTooLarge:
            await _refuse_http(writer, 413, f"the request body is over {MAX_BODY} bytes")
            self._say(f"refused {peer}: {shown(what, 300)}: 413 Content Too Large (over {MAX_BODY} bytes)")
            return
        except TimeoutError:
            await _refuse_http(writer, 408, "the request body stopped arriving")
            self._say(f"refused {peer}: {shown(what, 300)}: 408 Request Timeout (the body stopped arriving)")
            return
        except h11.RemoteProtocolError as exc:
            await _refuse_http(writer, 400, clip(str(exc), 200))
            self._say(f"refused {peer}: {shown(what, 300)}: 400 Bad Request ({shown(str(exc), 200)})")
            return
        status, headers, payload = self.http.play(method, target, body, request.headers)
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding",
                                                                    "content-encoding", "connection")]
        headers += [("content-length", str(len(payload))), ("connection", "close")]
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            out += conn.send(h11.Data(data=payload)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:  # a recorded response h11 will not frame (a bad header)
            out = plain_response(500, f"rtreplay: the recorded response cannot be sent: {exc}")
        writer.write(out)
        with contextlib.suppress(TimeoutError):  # a client that never reads its answer does not hold us
            async with asyncio.timeout(self.options.idle_timeout_s):
                await writer.drain()

    def _http_refusal(self, request: h11.Request) -> dict[str, Any] | None:
        """With --api-key, the HTTP side refuses other keys too, as the real API does (401)."""
        if self.options.api_key is None:
            return None
        key = _api_key(Headers([(k.decode("latin-1"), v.decode("ascii", "surrogateescape"))
                                for k, v in request.headers]))
        if key == self.options.api_key:
            return None
        rule, fields = ("T17-bad-key", {"masked": _masked(key)}) if key else ("T17-auth", {})
        error = self.options.rules.error(rule, event_id=None, server_event_id="", **fields)["error"]
        return {"error": {k: v for k, v in error.items() if k != "event_id"}}

    async def _websocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        protocol = ServerProtocol(
            # Level 1: a fifth of the default's CPU on audio deltas; the level is the server's own business.
            extensions=[ServerPerMessageDeflateFactory(compress_settings={"level": 1})]
            if self.options.compression else None,
            select_subprotocol=_select_subprotocol,
            max_size=MAX_FRAME,
        )
        protocol.receive_data(head)
        events = protocol.events_received()
        peer = peer_of(writer)
        if not events or not isinstance(events[0], Request):
            why = shown(str(protocol.handshake_exc.__cause__ or protocol.handshake_exc), 200) \
                if protocol.handshake_exc is not None else "not an HTTP request"
            writer.write(plain_response(400, f"Failed to open a WebSocket connection: {why}."))
            self._say(f"refused {peer}: WebSocket upgrade: 400 Bad Request ({why})")
            return
        request = events[0]
        url = urlsplit(request.path)
        response = protocol.accept(request)
        if response.status_code == 101 and url.path.rstrip("/") not in REALTIME_PATHS:
            response = protocol.reject(404, f"rtreplay serves the Realtime API at {', '.join(REALTIME_PATHS)}\n")
        protocol.send_response(response)
        send_pending(protocol, writer)
        if response.status_code != 101:
            why = (response.body or b"").decode("utf-8", "replace").strip()
            self._say(f"refused {peer}: WebSocket upgrade {shown(url.path, 200)}: {response.status_code} "
                      f"{response.reason_phrase} ({shown(why, 300)})")
            return
        session = self._new_session(request, url.path, parse_qs(url.query), peer)
        connection = _Connection(self, session, protocol, reader, writer)
        self._live.add(connection)
        try:
            await connection.run(self._refusal(request, url.query))
        except Exception:
            connection.abandon()  # the client is told, as by the real server's 1011
            raise
        finally:
            self._live.discard(connection)
            if connection.harness is not None:
                connection.harness.ended()
            session.closed.set()
            self._release_finished()

    def _release_finished(self) -> None:
        """Forget finished sessions beyond the ones the options keep (a long-running `serve` keeps none)."""
        kept = self.options.finished_kept
        if kept is None:
            return
        finished = [s for s in self.sessions if s.closed.is_set()]
        for session in finished[:max(0, len(finished) - kept)]:
            self.sessions.remove(session)

    def session_choice(self, index: int) -> int:
        """Which recorded session a connection replays: the one asked for, else the next in turn."""
        chosen = self.options.session_index if self.options.session_index is not None else index
        return chosen % len(self.scripts)

    def warnings(self) -> list[str]:
        """What a user of these recordings should know before trusting a verdict or a T2."""
        out = []
        if any(script.audio_cut_at_source for script in self.scripts):
            out.append("the recording's audio was cut at the source: conversation.item.truncate is not checked "
                       "against the audio length (T2) for its responses")
        for index, script in enumerate(self.scripts):
            out += [f"session {index}: {note}" for note in script.notes]
        return out

    def _new_session(self, request: Request, path: str, query: dict[str, list[str]], peer: str) -> LiveSession:
        index = self._connections
        self._connections += 1
        script = self.scripts[self.session_choice(index)] if self.scripts else None
        dialect: Dialect = "beta" if wants_beta(request.headers) else "ga"
        models = query.get("model") or query.get("deployment")
        model = models[0] if models else None
        seed = self.options.seed if self.options.seed is not None else time.time_ns() + index
        engine = Conversation(dialect, rules=self.options.rules, ids=IdFactory(seed), model=model,
                              audio_quantum_ms=self.options.audio_quantum_ms, created_at=int(time.time()),
                              template=script.session if script is not None else None,
                              enforce_t2=not (script is not None and script.audio_cut_at_source))
        session = LiveSession(index, dialect, path, model, engine, script, WireLog(), client=peer)
        self.sessions.append(session)
        self.session_started.set()
        self._say(f"session {index}: {dialect} client, model {shown(str(engine.session.get('model')), 200)}, "
                  f"from {peer}")
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
    """The client's key, as text: bytes beyond ASCII (surrogate escapes in websockets' headers) read as UTF-8."""
    key = _key_in(headers)
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if key is not None else None


def _key_in(headers: Headers) -> str | None:
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
    """Moves one session's frames between the socket and the pure objects, and keeps its time."""

    def __init__(self, server: ReplayServer, session: LiveSession, protocol: ServerProtocol,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        options = server.options
        self.server = server
        self.session = session
        self.engine = session.engine
        self.script = session.script
        self.protocol = protocol
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.wake = asyncio.Event()
        self.speed = options.speed
        self.latency = max(0.0, options.latency_ms) / 1000
        self.players: dict[str, tuple[int, ResponsePlayer]] = {}  # response id -> (its number, its player)
        self.user = User(self.script, timeline=options.play_user, speed=options.speed) if self.script else None
        # (due, event or None for a barge-in's mark, origin or the mark's text): the network pipe. Every entry is
        # due `latency` after it was made, so the pipe is in due order: first in, first out.
        self.outbox: deque[tuple[float, Event | None, str]] = deque()
        self.deferred: deque[tuple[float, Callable[[], None]]] = deque()  # server-side work that takes time
        self.counts: dict[str, int] = {}
        self.last_client_at = 0.0  # the last client frame other than an audio append
        self.last_activity = 0.0
        self.matcher = StrictMatcher(self.script.client_events, options.ignore) if self.script is not None else None
        self._fragments: list[bytes] = []
        self._fragment_op: Opcode | None = None
        self.harness = server.harness(session) if server.harness is not None else None
        if self.harness is not None:
            self.harness.opened(self)

    # -- the floor: what the user of this connection (its harness) sees and does

    def now(self) -> float:
        return self.loop.time() - self.start

    @property
    def responses_started(self) -> int:
        return self.session.responses_started

    def heard_at(self) -> float:
        return max(self.last_client_at, self.last_activity)

    def busy(self) -> bool:
        if self.players or self.outbox or self.deferred:
            return True
        if self.user is None:
            return False
        return self.user.busy or self.user.due_at(self.engine.input_audio_ms, True) is not None

    def barge_in(self, now: float, note: str) -> None:
        # Marked in the pipe, so the log shows it right after the frame it follows, as the client saw it.
        self.outbox.append((now + self.latency, None, note))
        speech = self.user.interrupt(now) if self.user is not None else Speech("started", None)
        self.speak(speech, "barge-in")

    def mark(self, now: float, note: str) -> None:
        self.session.log.mark(now, note)

    async def run(self, refusal: tuple[str, dict[str, Any]] | None) -> None:
        session = self.session
        if refusal is not None:
            self._close_with(refusal[0], **refusal[1])
            await self._drain()
            await self._read_until_closed()
            return
        if self.user is not None:
            self.user.opened(0.0)
        for event in self.engine.session_created():
            self._emit(event, "engine")
        self._flush()
        sender = asyncio.create_task(self._tick_loop())
        try:
            await self._read_loop()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            session.close_code = self.protocol.close_code
            session.close_reason = self.protocol.close_reason
            if self.harness is not None:
                self.harness.ended()
            session.closed.set()

    def end(self, reason: str, code: int = 1000) -> None:
        if self.protocol.state is State.OPEN:
            self._flush()
            self.session.log.mark(self.now(), f"close {code} {reason}")
            self.protocol.send_close(code, reason)
            send_pending(self.protocol, self.writer)

    def abandon(self) -> None:
        """The server failed on this session: close 1011, as a server does on its own error."""
        self.session.failure = self.session.failure or "rtreplay: internal error (see the console)"
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1011, "rtreplay: internal error")
            with contextlib.suppress(Exception):
                send_pending(self.protocol, self.writer)

    def _close_with(self, rule_id: str, **fields: Any) -> None:
        """An error frame and, in the same instant, the close the rule says (handshake refusals, expiry)."""
        rules = self.engine.rules
        error = rules.error(rule_id, event_id=None, server_event_id=self.engine.ids("event"), **fields)
        self._write(error, "engine")
        code = rules.rules[rule_id].close or 1000
        reason = rules.close_reason(rule_id, **fields)
        self.protocol.send_close(code, reason)
        send_pending(self.protocol, self.writer)
        self.session.log.mark(self.now(), f"{rule_id}: close {code} {reason}")

    # -- sending: every event is applied to the engine when the server makes it, and reaches the
    #    client `latency` later, in order, as through a network

    def _emit(self, event: Event, origin: str) -> None:
        if self.protocol.state is not State.OPEN:
            return
        sent = self.engine.send_server(event)
        now = self.now()
        self.last_activity = now
        self.outbox.append((now + self.latency, sent, origin))
        self._after(sent)

    def _emit_all(self, events: list[Event], origin: str) -> None:
        for event in events:
            self._emit(event, origin)

    def _flush(self) -> None:
        now = self.now()
        while self.outbox and self.outbox[0][0] <= now:
            _, event, origin = self.outbox.popleft()
            if event is None:  # a barge-in's mark: the cut, where the client saw it
                self.session.log.mark(now, origin, cut=True)
            else:
                self._write(event, origin, pending=True)
        send_pending(self.protocol, self.writer)

    def _write(self, event: Event, origin: str, *, pending: bool = False) -> None:
        """Frame one event; ``pending``: leave the bytes for the caller's one write of them all."""
        if self.protocol.state is not State.OPEN:
            return
        self.protocol.send_text(_wire(event))
        if not pending:
            send_pending(self.protocol, self.writer)
        self.session.log.server(self.now(), event, origin)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        if delay <= 0:
            action()
        else:
            self.deferred.append((self.now() + delay, action))  # one delay for all: in due order

    def _after(self, event: Event) -> None:
        """What an event the server made sets going: the model's output, the end of a turn; the harness is told."""
        etype = neutral_name(str(event.get("type")))
        count = self.counts[etype] = self.counts.get(etype, 0) + 1
        if etype == "response.created":
            self._play_next(event)
        elif etype == "response.done" and self.user is not None:
            self.user.response_ended(self.now())
        if self.harness is not None:
            self.harness.sent(etype, count)

    def _play_next(self, created: Event) -> None:
        session = self.session
        responses = self.script.responses if self.script is not None else []
        index = session.responses_started
        session.responses_started += 1
        response_id = str((created.get("response") or {}).get("id"))
        if index < len(responses):
            self.players[response_id] = (index, ResponsePlayer(responses[index], self.now(), self.speed))
            if self.harness is not None:
                self.harness.played(index, -1)
        else:
            session.log.mark(self.now(), f"response {index + 1}: the recording has no response left to play; "
                                         "an empty completed response answers")
            self._emit_all(self.engine.finish_empty(response_id), "engine")

    async def _drain(self) -> None:
        stall = self.server.options.write_stall_s
        if not await drain(self.writer, stall):
            self.session.log.mark(self.now(), f"the client read nothing for {stall:g} s: connection dropped")
            self.server._say(f"session {self.session.index}: the client read nothing for {stall:g} s: "
                             "connection dropped")

    # -- the clock

    async def _tick_loop(self) -> None:
        limit = self.server.options.max_session_s
        while self.protocol.state is State.OPEN:
            now = self.now()
            if now >= limit:
                self._flush()
                self._close_with("T18", minutes=f"{limit / 60:g}")
                return
            self._tick(now)
            self._flush()
            await self._drain()
            timeout = self._next_timeout()
            self.wake.clear()
            if timeout <= 0:
                continue
            # One timer handle per wait (model output is woken EARLY_S early: timers wake up to 1 ms late).
            timer = self.loop.call_at(self.loop.time() + timeout, self.wake.set)
            try:
                await self.wake.wait()
            finally:
                timer.cancel()

    def _tick(self, now: float) -> None:
        while self.deferred and self.deferred[0][0] <= now:
            self.deferred.popleft()[1]()
        for response_id, (index, player) in list(self.players.items()):
            for position, step in player.due(now + EARLY_S):
                self._emit_all(self.engine.render_step(step, response_id), "model")
                if self.harness is not None:
                    self.harness.played(index, position)
            if player.finished:
                self.players.pop(response_id, None)
        if self.user is not None:
            engine = self.engine
            for _ in range(4):  # a whole utterance can arrive in one append: its start, then at once its end
                said = self.user.poll(now, input_ms=engine.input_audio_ms, listening=engine.turn_detection is not None,
                                      response_active=engine.response is not None)
                for speech in said:
                    self.speak(speech)
                if not said:
                    break
        if self.harness is not None:
            self.harness.tick(now)

    def speak(self, speech: Speech, origin: str = "user") -> None:
        """What a real server does when the user speaks: speech started (a barge-in cancels, if the session
        says so), or stopped (the turn committed, and the response it starts)."""
        turn = speech.turn
        engine = self.engine
        timeline = self.user is not None and self.user.timeline
        if speech.kind == "started":
            start_ms = None if timeline or turn is None else turn.audio_start_ms
            self._emit(engine.speech_started(turn.item_id if turn else None, start_ms), origin)
            default = engine.default_response
            if engine.interrupts() and default is not None:
                self._cancel("turn_detected", default.id)
            return
        end_ms = None if timeline or turn is None else turn.audio_end_ms
        self._emit_all(engine.speech_stopped(turn.text if turn is not None else None, end_ms), "user")
        if engine.creates_response():
            self._emit_all(engine.auto_response(), "engine")

    def _cancel(self, reason: str, response_id: str) -> None:
        """The model stops at once; the cancel tail follows after the server's latency (reference §8.3-8.4)."""
        entry = self.players.pop(response_id, None)
        if entry is not None:
            entry[1].stop()
        response = self.engine.active.get(response_id)
        if response is None:
            return
        response.cancelling = True
        # Stopping takes the server a round trip's time: a client's next event can land before it is done.
        self._later(2 * self.latency,
                    lambda: self._emit_all(self.engine.cancel_tail(reason, response_id), "engine"))

    def _next_timeout(self) -> float:
        now = self.now()
        deadlines = [self.server.options.max_session_s - now]
        if self.outbox:
            deadlines.append(self.outbox[0][0] - now)
        if self.deferred:
            deadlines.append(self.deferred[0][0] - now)
        for _, player in self.players.values():
            if (deadline := player.next_deadline()) is not None:
                deadlines.append(deadline - EARLY_S - now)
        if self.user is not None:
            due = self.user.due_at(self.engine.input_audio_ms, self.engine.turn_detection is not None)
            if due is not None:
                deadlines.append(due - now)
        if self.harness is not None and (wanted := self.harness.deadline()) is not None:
            deadlines.append(wanted - now)
        return max(0.0, min(deadlines)) if min(deadlines) > 0 else 0.0

    # -- receiving

    async def _read_loop(self) -> None:
        async for frame in receive_frames(self.reader, self.protocol, self.writer, self.server.options.write_stall_s):
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
        received = self.engine.receive_client(data)
        etype = received.type
        if etype not in ("input_audio_buffer.append", "session.input_audio_buffer.append"):
            self.last_client_at = now
        divergence = self.matcher.check(received.event) if self.matcher is not None else None
        session.log.client(now, data, received, divergence)
        if divergence is not None:
            session.divergences.append(divergence)
            self._divergence(divergence)
            if self.server.options.strict:
                return
        self._tell_user(received)
        if etype == "response.cancel" and received.rule is None and received.reactions:
            self._cancel("client_cancelled", str(received.reactions[-1]["response"]["id"]))
        else:
            self._emit_all(received.reactions, "engine")
        if etype == "session.close":
            self.protocol.send_close(1000, "")
            send_pending(self.protocol, self.writer)
        self._flush()
        self.wake.set()

    def _tell_user(self, received: Received) -> None:
        user, event = self.user, received.event
        if user is None or event is None or received.rule is not None:
            return
        etype = received.type
        if etype in ("input_audio_buffer.append", "session.input_audio_buffer.append"):
            user.appended()
        elif etype == "conversation.item.create":
            item = event.get("item") or {}
            if item.get("type") == "function_call_output":
                user.client_typed("tool")
            elif item.get("role") == "user":
                user.client_typed("message")
        elif etype == "response.create" and (event.get("response") or {}).get("conversation") != "none":
            user.client_typed("response")

    def _divergence(self, divergence: Divergence) -> None:
        text = f"session {self.session.index}: {shown(divergence.describe())}"
        self.server._say(("strict replay: " if self.server.options.strict else "divergence: ") + text)
        if self.server.options.strict:
            self.session.failure = f"strict replay: {divergence.describe()}"
            self.session.log.mark(self.now(), self.session.failure)
            self._flush()
            self.protocol.send_close(1008, _fit(divergence.describe(), 123))
            send_pending(self.protocol, self.writer)


class RecordedHttp:
    """The cassette's plain-HTTP interactions, played as vcrpy plays them (its own matchers and play counts).

    A request matches a recording on vcrpy's default matchers less the host's (method, path, query:
    the host is this server); each recording plays once, in recorded order, and among the unplayed
    matches the first whose body matches too (vcrpy's body matcher: JSON compared as JSON) goes first.
    Two recorded ``POST /v1/realtime/client_secrets`` therefore replay in order, or by body.
    """

    MATCH_ON = (vcr_matchers.method, vcr_matchers.path, vcr_matchers.query)

    def __init__(self, interactions: list[dict[str, Any]]) -> None:
        self.recorded: list[tuple[VcrRequest, dict[str, Any]]] = []
        for interaction in interactions:
            req = interaction["request"]
            body = req.get("body")
            body = body.get("string") if isinstance(body, dict) else body
            try:
                recorded = VcrRequest(str(req["method"]).upper(), str(req["uri"]), body, req.get("headers") or {})
                recorded.query  # noqa: B018 -- a uri urllib cannot parse can never match: left out
            except (ValueError, TypeError):
                continue
            self.recorded.append((recorded, interaction["response"]))
        self.plays = [0] * len(self.recorded)

    def play(self, method: str, target: str, body: bytes,
             headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, list[tuple[str, str]], bytes]:
        """The response to one request: the next unplayed recording it matches, else a 404 saying why."""
        fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
                  if k.lower() not in (b"transfer-encoding", b"content-length")}  # the body is already whole
        uri = target if urlsplit(target).scheme else f"http://rtreplay{target if target.startswith('/') else '/'}"
        try:
            asked = VcrRequest(method.upper(), uri, body, fields)
            asked.query  # noqa: B018
        except ValueError:
            return self._missing(method, target, "a request target urllib cannot parse")
        matching = [i for i, (recorded, _) in enumerate(self.recorded)
                    if vcr_matchers.requests_match(asked, recorded, self.MATCH_ON)]
        unplayed = [i for i in matching if self.plays[i] == 0]
        if not unplayed:
            why = (f"its {len(matching)} recorded {method} {urlsplit(target).path} have all been played "
                   "(each plays once, as in vcrpy)") if matching else ""
            return self._missing(method, target, why)
        chosen = next((i for i in unplayed if _same_body(asked, self.recorded[i][0])), unplayed[0])
        self.plays[chosen] += 1
        resp = self.recorded[chosen][1]
        out_headers = [(str(k), str(v)) for k, values in (resp.get("headers") or {}).items()
                       for v in (values if isinstance(values, list) else [values])]
        payload = (resp.get("body") or {}).get("string") or ""
        return resp["status"]["code"], out_headers, payload.encode() if isinstance(payload, str) else payload

    @staticmethod
    def _missing(method: str, target: str, why: str) -> tuple[int, list[tuple[str, str]], bytes]:
        asked = clip(f"{method} {target}", 300)
        message = f"rtreplay: the cassette has no recorded {asked}" + (f": {why}" if why else "")
        error = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "unknown_url"}}
        return 404, [("content-type", "application/json")], json.dumps(error).encode()


def _same_body(asked: VcrRequest, recorded: VcrRequest) -> bool:
    """vcrpy's body matcher; a body it cannot compare (JSON nested past Python's recursion limit) does not match."""
    try:
        return bool(vcr_matchers.requests_match(asked, recorded, (vcr_matchers.body,)))
    except Exception:
        return False


def _wire(event: Event) -> bytes:
    """The event's JSON. An audio delta's base64 needs no escaping: it is spliced in, not re-encoded."""
    delta = event.get("delta")
    if isinstance(delta, str) and len(delta) > 256 and event.get("type") in AUDIO_DELTA_TYPES:
        head = json.dumps({k: v for k, v in event.items() if k != "delta"}, ensure_ascii=False,
                          separators=(",", ":"))
        return _utf8(f'{head[:-1]},"delta":"{delta}"}}')
    return _utf8(json.dumps(event, ensure_ascii=False, separators=(",", ":")))


def _utf8(text: str) -> bytes:
    """UTF-8, with a lone surrogate (valid JSON from a client: ``"\\ud800"``) written back as its JSON escape.

    It can only stand inside a JSON string, where ``\\ud800`` is the same value; a JavaScript server's
    ``JSON.stringify`` writes it so. Frames stay valid UTF-8 and the session lives on.
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


def _fit(text: str, limit: int) -> str:
    """The text cut to ``limit`` UTF-8 bytes (a close reason's room), with an ellipsis when cut."""
    data = _utf8(text)
    if len(data) <= limit:
        return data.decode()
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


async def _refuse_http(writer: asyncio.StreamWriter, status: int, why: str,
                       content_type: str = "text/plain; charset=utf-8") -> None:
    """Answer and close without reading what else the client sends (a bounded moment for it to see the answer)."""
    writer.write(plain_response(status, why, content_type))
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(1.0):
            await writer.drain()


def url_host(host: str) -> str:
    """The host as a URL writes it: IPv6 in brackets, and a wildcard bind as the loopback address it answers on."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host or "127.0.0.1"  # a name (localhost), or "" for every interface
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{str(address).replace('%', '%25')}]" if address.version == 6 else str(address)


def exposure(host: str) -> str | None:
    """What binding ``host`` opens beyond this machine (None: loopback only). Names are resolved."""
    if not host.strip("[]"):
        return "every network interface of this machine"
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return None  # the bind fails with its own clear error
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if any(a.is_unspecified for a in addresses):
        return "every network interface of this machine"
    outside = sorted({str(a) for a in addresses if not a.is_loopback})
    return f"the network, at {', '.join(outside)}" if outside else None


async def serve_forever(server: ReplayServer,
                        on_ready: Callable[[ReplayServer], None] | None = None) -> tuple[str, int]:
    """Serve until SIGINT or SIGTERM; then close live sessions 1001. The signal's name, and how many were closed.

    The loop's exception handler turns accept()'s "out of system resource" into one line now and then.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    previous = loop.get_exception_handler()

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in STARVED_ERRNOS and "socket" in context:
            server.out_of_descriptors(exc)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_loop_error)
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals off the main thread
            loop.add_signal_handler(sig, on_signal, sig)
            handled.append(sig)
    try:
        await server.start()
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    finally:
        closed = await server.close(going_away=True)  # a second signal meanwhile changes nothing
        for sig in handled:
            loop.remove_signal_handler(sig)
        loop.set_exception_handler(previous)
    return (received[0] if received else "stop"), closed
