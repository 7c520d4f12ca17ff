"""The recorder's plain-HTTP side: interactions in vcrpy's own format, no process-wide patch, no lock."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import httpx
import vcr

from replay.cassettes.cassette import load
from replay.net.recorder import RecordingProxy

KEY = "sk-test-" + "h" * 24


class SlowGzipUpstream:
    """Answers every POST with a gzip-encoded JSON echo of its body, after a pause: calls overlap."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.in_flight = 0
        self.most_at_once = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:"))
        body = await reader.readexactly(length)
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        await asyncio.sleep(self.pause)
        self.in_flight -= 1
        payload = gzip.compress(json.dumps({"echo": json.loads(body)}).encode())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                     b"content-length: " + str(len(payload)).encode() + b"\r\nconnection: close\r\n\r\n" + payload)
        await writer.drain()
        writer.close()


async def test_concurrent_calls_are_recorded_as_vcrpy_interactions_that_vcrpy_replays(tmp_path: Path) -> None:
    out = tmp_path / "http.yaml"
    upstream = SlowGzipUpstream(pause=0.5)
    async with asyncio.timeout(30):
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        upstream.port = server.sockets[0].getsockname()[1]
        proxy = RecordingProxy(out, upstream=f"http://127.0.0.1:{upstream.port}", api_key=KEY)
        async with proxy, httpx.AsyncClient(base_url=proxy.http_base_url) as client:
            answers = await asyncio.gather(*(client.post("/realtime/client_secrets", json={"n": n})
                                             for n in range(3)))
        server.close()
    assert [a.json() for a in answers] == [{"echo": {"n": n}} for n in range(3)]
    assert upstream.most_at_once == 3  # nothing serialized the calls

    recorded = load(out).http_interactions
    assert sorted(json.loads(i["request"]["body"])["n"] for i in recorded) == [0, 1, 2]
    for interaction in recorded:
        response = interaction["response"]
        assert "content-encoding" not in response["headers"]  # the body is kept decoded, as vcrpy does
        assert json.loads(response["body"]["string"]) == {"echo": json.loads(interaction["request"]["body"])}
        assert interaction["request"]["headers"]["authorization"] == ["Bearer REDACTED"]
    assert KEY not in out.read_text()

    # vcrpy itself plays the file back to an httpx client, matching on the body
    with vcr.use_cassette(str(out), record_mode="none", match_on=["method", "uri", "body"]):
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{upstream.port}/v1/realtime/client_secrets"
            again = [await client.post(url, content=interaction["request"]["body"]) for interaction in recorded]
    assert [a.json() for a in again] == [json.loads(i["response"]["body"]["string"]) for i in recorded]
