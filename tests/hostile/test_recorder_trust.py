"""The recorder holds the user's real key: it must go to the configured upstream only, and only on a
local client's behalf. Each test is an attack that worked before the gate (issue 14)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response

from cli import app
from replay.cassettes.cassette import load
from replay.net.recorder import RecorderError, RecordingProxy, Upstream, refusal

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-proj-" + "Q" * 40
MODEL = "gpt-realtime"


class Listener:
    """A port that counts who connects and what they sent: the attacker's, or the upstream's."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.received += await asyncio.wait_for(reader.read(65536), 2)
        except TimeoutError:
            pass
        writer.close()


class FakeUpstream:
    """A Realtime-ish upstream that keeps the headers of every upgrade it was sent."""

    def __init__(self) -> None:
        self.headers: list[Headers] = []
        self.port = 0

    @asynccontextmanager
    async def running(self, redirect_to: int | None = None) -> AsyncIterator[FakeUpstream]:
        def process_request(connection: ServerConnection, request: Request) -> Response | None:
            self.headers.append(request.headers)
            if redirect_to is not None:
                response = connection.respond(302, "moved\n")
                response.headers["Location"] = f"ws://127.0.0.1:{redirect_to}/v1/realtime?model={MODEL}"
                return response
            return None

        async def handler(ws: ServerConnection) -> None:
            await ws.send(json.dumps({"type": "session.created", "session": {"model": MODEL}}))
            await asyncio.wait_for(ws.wait_closed(), 10)

        async with websockets.serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self


async def raw_request(port: int, head: bytes) -> bytes:
    """Send bytes as they are (no client library would send these) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 20)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# ---------------------------------------------------------------------------- the request target


@pytest.mark.parametrize("target", [
    "@{port}/v1/realtime?model=gpt-realtime",  # the reported attack: upstream + target = wss://api@127.0.0.1:PORT
    "@127.0.0.1:{port}/v1/realtime?model=gpt-realtime",
    "//127.0.0.1:{port}/v1/realtime",
    "http://127.0.0.1:{port}/v1/realtime",
    "ws://127.0.0.1:{port}/v1/realtime",
])
async def test_a_target_that_names_a_host_never_reaches_it(tmp_path: Path, target: str) -> None:
    async with asyncio.timeout(30), Listener() as attacker, Listener() as upstream:
        proxy = RecordingProxy(tmp_path / "c.yaml", upstream=f"ws://127.0.0.1:{upstream.port}", port=0,
                               api_key=KEY)
        async with proxy:
            wanted = target.format(port=attacker.port)
            for upgrade in (True, False):
                head = (f"GET {wanted} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
                        + ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n" if upgrade else "")
                        + "\r\n").encode()
                answer = await raw_request(proxy.port, head)
                assert status_of(answer) in (400, 404), answer[:200]
        assert attacker.connections == 0
        assert upstream.connections == 0


def test_no_target_ever_builds_a_url_off_the_upstream() -> None:
    """A seeded fuzz over targets made of the characters that matter: every URL stays on the upstream's host."""
    alphabet = "/@:.\\?#%2e5fA-v1openairealtime[]"
    rng = random.Random(14)
    upstream = Upstream.parse("wss://api.openai.com")
    built = 0
    for _ in range(20000):
        target = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        target = rng.choice(["", "/v1/", "/openai/"]) + target
        headers = Headers({"Host": "127.0.0.1:8766"})
        if refusal(target, headers) is not None:
            with pytest.raises(RecorderError):
                upstream.url(target, websocket=True)
            continue
        url = upstream.url(target, websocket=True)
        built += 1
        parts = httpx.URL(url)
        assert (parts.scheme, parts.host, parts.port, parts.userinfo) == ("wss", "api.openai.com", None, b""), target
        assert parts.path.startswith(("/v1/", "/openai/")), target
    assert built > 1000  # the fuzz reached the forwarding path, not only refusals


@pytest.mark.parametrize("target", ["/v1/../../x", "/v1/%2e%2e/x", "/v1/a\\b", "/v1/a b", "/v2/realtime", "*"])
def test_targets_off_the_api_are_refused(target: str) -> None:
    refused = refusal(target, Headers({"Host": "localhost:8766"}))
    assert refused is not None and refused[0] == 404


# ---------------------------------------------------------------------------- Origin, Host, peers


async def test_a_web_page_gets_no_session_on_the_users_key(tmp_path: Path) -> None:
    """What `new WebSocket("ws://127.0.0.1:8766/...")` on any site sends: a keyless upgrade with its Origin."""
    notices: list[str] = []
    upstream = FakeUpstream()
    async with asyncio.timeout(30), upstream.running():
        proxy = RecordingProxy(tmp_path / "c.yaml", upstream=f"ws://127.0.0.1:{upstream.port}", port=0,
                               api_key=KEY, on_notice=notices.append)
        async with proxy:
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(proxy.ws_url(MODEL), origin="http://evil.example"):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403
            assert upstream.headers == []
            # the same page's POST (a form, or fetch with no preflight)
            async with httpx.AsyncClient() as client:
                posted = await client.post(f"{proxy.http_base_url}/realtime/client_secrets", content=b"{}",
                                           headers={"Origin": "http://evil.example"})
            assert posted.status_code == 403
            # a page whose name was rebound to 127.0.0.1 sends its own name as Host, and no Origin on a GET
            answer = await raw_request(proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: evil.example:8766\r\n\r\n")
            assert status_of(answer) == 403
            # a local page (a dev server on this machine) and a plain local program are served, with the key
            async with websockets.connect(proxy.ws_url(MODEL), origin="http://localhost:3000") as ws:  # type: ignore[arg-type]
                await ws.recv()
            async with websockets.connect(proxy.ws_url(MODEL)) as ws:
                await ws.recv()
    assert [h.get("Authorization") for h in upstream.headers] == [f"Bearer {KEY}"] * 2
    assert len(notices) == 3 and all(n.startswith("refused ") for n in notices), notices
    assert all(KEY not in n for n in notices)


def test_the_gate_in_every_case() -> None:
    def gate(**headers: str) -> int | None:
        answer = refusal("/v1/realtime?model=x", Headers(headers))
        return None if answer is None else answer[0]

    assert gate(Host="127.0.0.1:8766") is None
    assert gate(Host="[::1]:8766", Origin="http://[::1]:5173") is None
    assert gate(Host="localhost", Origin="https://app.localhost") is None
    assert gate(Host="127.0.0.1:8766", Origin="null") == 403  # a sandboxed iframe or a file:// page
    assert gate(Host="127.0.0.1:8766", Origin="http://127.0.0.1.evil.example") == 403
    assert gate(Host="127.0.0.1:8766", Origin="chrome-extension://abc") == 403
    assert gate(Host="evil.example") == 403
    assert gate() == 400
    assert refusal("/v1/x", Headers([("Host", "127.0.0.1"), ("Origin", "http://localhost"),
                                     ("Origin", "http://evil.example")])) is not None
    assert refusal("/v1/x", Headers([("Host", "127.0.0.1"), ("Host", "evil.example")])) is not None
    # a remote client of an --allow-remote recorder names the machine by address, never by a rebindable name
    assert refusal("/v1/x", Headers({"Host": "192.0.2.7:8766"}), allow_remote=True) is None
    assert refusal("/v1/x", Headers({"Host": "evil.example"}), allow_remote=True) is not None


def test_the_key_is_lent_to_local_clients_only(tmp_path: Path) -> None:
    proxy = RecordingProxy(tmp_path / "c.yaml", upstream="wss://api.openai.com", api_key=KEY,
                           host="127.0.0.1", allow_remote=True)
    bare = Headers({"Host": "x"})
    lent = dict(proxy._upstream_headers(bare, frozenset(), "127.0.0.1"))
    assert lent.get("Authorization") == f"Bearer {KEY}"
    assert "Authorization" not in dict(proxy._upstream_headers(bare, frozenset(), "192.0.2.7"))
    assert "Authorization" not in dict(proxy._upstream_headers(bare, frozenset(), "unknown"))
    own = Headers({"Host": "x", "Authorization": "Bearer theirs"})
    assert [v for k, v in proxy._upstream_headers(own, frozenset(), "127.0.0.1") if k == "Authorization"] == [
        "Bearer theirs"]


# ---------------------------------------------------------------------------- where the key may go


async def test_an_upstream_redirect_is_not_followed_with_the_key(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    async with asyncio.timeout(30), Listener() as elsewhere, upstream.running(redirect_to=elsewhere.port):
        proxy = RecordingProxy(tmp_path / "c.yaml", upstream=f"ws://127.0.0.1:{upstream.port}", port=0, api_key=KEY)
        async with proxy:
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(proxy.ws_url(MODEL)):
                    pass
            assert refused.value.response.status_code == 302
        assert len(upstream.headers) == 1
        assert elsewhere.connections == 0


@pytest.mark.parametrize("upstream", ["ws://api.openai.com", "http://192.0.2.7:8080", "https://user:pw@api.openai.com",
                                      "wss://api.openai.com?x=1", "ftp://api.openai.com", "wss://"])
def test_upstreams_that_would_expose_the_key_are_refused(tmp_path: Path, upstream: str) -> None:
    with pytest.raises(RecorderError):
        RecordingProxy(tmp_path / "c.yaml", upstream=upstream)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_listening_beyond_this_machine_needs_a_flag(tmp_path: Path, host: str) -> None:
    result = CliRunner().invoke(app, ["record", "-o", str(tmp_path / "c.yaml"), "--host", host, "--port", "0"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.yaml").exists()
    assert RecordingProxy(tmp_path / "c.yaml", host=host, allow_remote=True).host == host  # the flag allows it


def test_record_output_that_cannot_be_written_fails_before_listening(tmp_path: Path) -> None:
    for output in ("/proc/rtreplay/c.yaml", "/dev/null"):
        result = CliRunner().invoke(app, ["record", "-o", output, "--port", "0", "--record-mode", "rewrite"])
        assert result.exit_code == 2, result.output
        assert output in result.output and ".tmp" not in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------- the stop, and the console


def test_the_key_stays_off_the_console_and_live_sessions_close_1001(tmp_path: Path) -> None:
    """`rtreplay record` as a user runs it: a session through it, then SIGINT while the session is open."""
    out = tmp_path / "mine.yaml"

    async def scenario() -> tuple[int, str]:
        upstream = FakeUpstream()
        async with asyncio.timeout(60), upstream.running():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            env = {**os.environ, "OPENAI_API_KEY": KEY}
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "cli.py"), "record", "-o", str(out), "--port", str(port),
                "--upstream", f"ws://127.0.0.1:{upstream.port}", env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert process.stdout is not None
            seen = b""
            while b"Ctrl-C" not in seen:
                seen += await process.stdout.readline()
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}") as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message"}}))
                process.send_signal(signal.SIGINT)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                code = closed.value.rcvd.code if closed.value.rcvd else -1
            rest, _ = await process.communicate()
            assert upstream.headers[0]["Authorization"] == f"Bearer {KEY}"  # it was used, where configured
            return code, (seen + rest).decode()

    code, console = asyncio.run(scenario())
    assert code == 1001
    assert "closed 1 live session(s) with 1001 going away" in console
    assert KEY not in console and KEY[8:20] not in console
    assert "Traceback" not in console
    text = out.read_text()
    assert KEY not in text
    assert load(out).sessions[0].frames  # the session was kept, marked incomplete


# ---------------------------------------------------------------------------- the HTTP side's bodies


async def test_a_declared_oversize_body_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """The recorder reads bodies with the server's bounded reader: 413 on the declared length alone."""
    async with asyncio.timeout(30), Listener() as upstream:
        proxy = RecordingProxy(tmp_path / "c.yaml", upstream=f"ws://127.0.0.1:{upstream.port}", port=0, api_key=KEY)
        async with proxy:
            answer = await raw_request(proxy.port, f"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: 127.0.0.1:"
                                                   f"{proxy.port}\r\nContent-Length: {10**10}\r\n\r\n".encode())
        assert status_of(answer) == 413
        assert upstream.connections == 0


async def test_a_body_that_stops_arriving_is_answered_408(tmp_path: Path) -> None:
    """A slow client cannot hold a recorder connection past the idle bound (it waited forever before)."""
    async with asyncio.timeout(40), Listener() as upstream:
        proxy = RecordingProxy(tmp_path / "c.yaml", upstream=f"ws://127.0.0.1:{upstream.port}", port=0, api_key=KEY)
        async with proxy:
            answer = await raw_request(proxy.port, f"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: 127.0.0.1:"
                                                   f"{proxy.port}\r\nContent-Length: 100\r\n\r\n{{\"half".encode())
        assert status_of(answer) == 408
        assert upstream.connections == 0
