"""`rtreplay serve` as a process under attack: stops, exposure, descriptor exhaustion, what the console shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[2]
CASSETTE = "ga_text_turn_audio_response"
AUTH = {"Authorization": "Bearer sk-test"}


class Serve:
    """`rtreplay serve` in a subprocess, its output read as it comes (bounded waits throughout)."""

    def __init__(self, *args: str, max_files: int | None = None) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "serve", CASSETTE, "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"},
            preexec_fn=limit if max_files is not None else None)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        found = self.wait_for(r"WebSocket: ws://(\S+):(\d+)/")
        self.host, self.port = found[1], int(found[2])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first output line matching ``pattern``; an AssertionError with the output after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if (found := re.search(pattern, line)) is not None:
                    return found
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-200:]))
            try:
                line = self._queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # the end stays visible to the next reader
                raise AssertionError(f"serve exited; no line matching {pattern!r}; output:\n" + "\n".join(self.lines))
            self.lines.append(line)

    def stop(self, sig: int | None = signal.SIGINT, timeout: float = 20.0) -> tuple[int, str]:
        """Send ``sig`` (None: it was sent already), wait for the exit; the exit code and all the output."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        with contextlib.suppress(queue.Empty):
            while (line := self._queue.get(timeout=5)) is not None:
                self.lines.append(line)
        return code, "\n".join(self.lines)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime?model=gpt-realtime"


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Started(Serve):
        def __init__(self, *args: str, **kwargs: Any) -> None:
            started.append(self)
            super().__init__(*args, **kwargs)

    yield Started
    for each in started:
        if each.process.poll() is None:
            each.process.kill()
            each.process.wait(5)


@pytest.mark.parametrize(("sig", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
async def test_a_stop_closes_live_sessions_with_1001_and_exits_0(serve: type[Serve], sig: int, name: str) -> None:
    """A connected client hears "going away" (1001), the console says how many were closed, no traceback."""
    server = serve()
    async with connect(server.ws_url, additional_headers=AUTH) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
        server.process.send_signal(sig)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    code, out = await asyncio.to_thread(server.stop, None)
    assert code == 0, out
    assert f"stopped ({name}): 1 live session(s) closed with 1001 going away" in out
    assert "Traceback" not in out


def test_a_stop_with_no_session_is_quiet_and_clean(serve: type[Serve]) -> None:
    code, out = serve().stop(signal.SIGTERM)
    assert code == 0 and "stopped (SIGTERM): 0 live session(s) closed" in out and "Traceback" not in out, out


def test_malformed_requests_get_400_and_one_line_each(serve: type[Serve]) -> None:
    """A bad request line, a TLS ClientHello, conflicting lengths, no Host: 400 each, one console line each."""
    server = serve()
    requests = {
        "bad request line": b"GARBAGE\r\n\r\n",
        "TLS ClientHello": bytes.fromhex("16030100a5010000a1030300") + b"\x00" * 40 + b"\r\n\r\n",
        "duplicate Content-Length": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                    b"Content-Length: 4\r\n\r\nabc",
        "missing Host": b"GET /v1/x HTTP/1.1\r\n\r\n",
        "WebSocket upgrade without Host": b"GET /v1/realtime?model=x HTTP/1.1\r\nUpgrade: websocket\r\n"
                                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    }
    for kind, request in requests.items():
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (kind, answer)
    server.wait_for(r"(?i)refused .*missing mandatory host", timeout=10)
    code, out = server.stop()
    assert code == 0, out
    refused = [line for line in out.splitlines() if line.startswith("refused ")]
    assert len(refused) == len(requests), out
    assert "Traceback" not in out and "Unhandled exception" not in out, out


def test_a_host_beyond_loopback_without_a_key_is_refused() -> None:
    """Nothing is bound: the refusal comes first, one line, exit 2."""
    for host in ("0.0.0.0", "::", "192.0.2.2"):
        done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "serve", CASSETTE, "--host", host, "--port", "0"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"})
        out = done.stdout + done.stderr
        assert done.returncode == 2, out
        assert len(out.strip().splitlines()) == 1 and "--api-key" in out and "--insecure-any-key" in out, out
        assert "Traceback" not in out


def _serve_without_binding(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """The CLI's `serve` up to its ready lines, with serve_forever stubbed: no socket is bound beyond loopback."""
    import cli
    import replay.net.server

    async def fake(server: replay.net.server.ReplayServer, on_ready: Any) -> tuple[str, int]:
        server.port = 8765
        on_ready(server)
        return "SIGINT", 0

    monkeypatch.setattr(replay.net.server, "serve_forever", fake)
    result = CliRunner().invoke(cli.app, ["serve", CASSETTE, *args], env={"COLUMNS": "400"})
    return result.exit_code, result.output


def test_a_wildcard_bind_warns_and_prints_usable_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _serve_without_binding(monkeypatch, "--host", "0.0.0.0", "--insecure-any-key")
    assert code == 0, out
    assert "warning: --host 0.0.0.0 serves every network interface" in out and "with any key" in out
    assert "export OPENAI_BASE_URL=http://127.0.0.1:8765/v1" in out and "0.0.0.0:8765" not in out
    assert "loopback" in out  # the note on which address the URLs use
    code, out = _serve_without_binding(monkeypatch, "--host", "::", "--api-key", "sk-mine")
    assert code == 0, out
    assert "ws://[::1]:8765/v1/realtime?model=" in out and "export OPENAI_BASE_URL=http://[::1]:8765/v1" in out
    assert "only with the --api-key key" in out
    assert "sk-mine" not in out
    code, out = _serve_without_binding(monkeypatch)
    assert code == 0 and "warning: --host" not in out, out


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_loopback_urls_are_bracketed_and_work(serve: type[Serve]) -> None:
    server = serve("--host", "::1")
    assert server.host == "[::1]"
    server.wait_for(r"export OPENAI_BASE_URL=http://\[::1\]:\d+/v1$")
    async with connect(server.ws_url, additional_headers=AUTH) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
    code, out = await asyncio.to_thread(server.stop)
    assert code == 0 and "warning" not in out, out


async def test_the_console_never_shows_a_clients_key(serve: type[Serve]) -> None:
    """Neither a wrong key on the WebSocket nor one on HTTP reaches the console; HTTP refuses it too (401)."""
    server = serve("--api-key", "sk-the-right-one")
    secret = "sk-client-secret-0123456789"
    async with connect(server.ws_url, additional_headers={"Authorization": f"Bearer {secret}"}) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Authorization: Bearer " + secret.encode() + b"\r\n\r\n{}")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b'"code": "invalid_api_key"' in answer and secret.encode() not in answer
    server.wait_for(r"refused .*401")
    code, out = await asyncio.to_thread(server.stop)
    assert code == 0, out
    assert secret not in out and "0123456789" not in out and "sk-the-right-one" not in out, out


async def test_escapes_and_huge_strings_from_a_client_reach_the_console_cut_and_visible(serve: type[Serve]) -> None:
    """A model name with an OSC 8 hyperlink and 5000 more characters: one visible, cut line."""
    server = serve()
    model = "gpt-%1B]8;;http://evil.example/%07click%1B]8;;%07" + "m" * 5000
    async with connect(f"ws://127.0.0.1:{server.port}/v1/realtime?model={model}", additional_headers=AUTH) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
        key = "\x1b[2J" + "k" * 5000
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", key: 1}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "error"
    line = server.wait_for(r"session 0: ga client, model .*").string
    assert "\x1b" not in line and "\\x1b]8;;http://evil.example/\\x07click" in line
    assert len(line) < 2500 and "more characters" in line
    divergence = server.wait_for(r"divergence: session 0").string
    assert "\x1b" not in divergence and len(divergence) < 2500
    code, out = await asyncio.to_thread(server.stop)
    assert code == 0 and "\x1b" not in out and "\x07" not in out


async def test_descriptor_exhaustion_is_one_line_and_the_server_recovers(serve: type[Serve]) -> None:
    """With 64 descriptors, 100 idle sockets: one clear line, and a good client is served once they close."""
    server = serve(max_files=64)
    idle = []
    try:
        for _ in range(100):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        server.wait_for(r"out of file descriptors \(EMFILE", timeout=20)
    finally:
        for sock in idle:
            sock.close()
    server.wait_for(r"descriptors are free again: accepting connections", timeout=30)
    async with connect(server.ws_url, additional_headers=AUTH, open_timeout=20) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "session.created"
    code, out = await asyncio.to_thread(server.stop)
    assert code == 0, out
    assert out.count("out of file descriptors") == 1, out
    assert "Traceback" not in out and "socket.accept() out of system resource" not in out, out
