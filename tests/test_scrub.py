"""Secrets never reach a written cassette, and `find_secrets` reports them without printing them."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from typer.testing import CliRunner

from replay.cassettes.cassette import Cassette, Frame, WebSocketSession, load, loads
from replay.cassettes.scrub import find_secrets, mask, scrub_cassette
from replay.net.recorder import RecordingProxy
from replay.net.server import ReplayServer, ServerOptions

from .test_recorder import EPHEMERAL, MODEL, ga_cassette

SK = "sk-proj-" + "Ab3_" * 6
SK_IN_TEXT = "sk-" + "z" * 20
BROWSER_KEY = "browser-key-0123456789"
AZURE_KEY = "azure-key-0123456789"
ENV_KEY = "plain-env-secret-123456"  # not sk-shaped: only its value identifies it
EK = "ek_" + "9c" * 16
CLIENT_SECRET = "not-shaped-client-secret"
GA_SECRET = "not-shaped-ga-secret-value"
EXTRA = "custom-secret-value-42"
COOKIE = "__cf_bm=cookie-value-123"
SECRETS = (SK, SK_IN_TEXT, BROWSER_KEY, AZURE_KEY, ENV_KEY, EK, CLIENT_SECRET, GA_SECRET, EXTRA, COOKIE)
AUDIO = base64.b64encode(bytes(range(256)) * 4).decode()
BENIGN = "task-abcdefghijklmnopqrstu week_abcdefghijklmnopqrstuvwxyz sk-short"


def leaky() -> Cassette:
    """One of every kind of secret, in every place a cassette can hold one."""
    frames = [
        Frame(0.0, "client", event={"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": f"my key is {SK_IN_TEXT}, env {ENV_KEY}. {BENIGN}"}]}}),
        Frame(0.1, "server", event={"type": "session.updated", "session": {"client_secret": {
            "value": CLIENT_SECRET, "expires_at": 1}}}),
        Frame(0.2, "server", event={"type": "response.output_audio.delta", "delta": AUDIO}),
        Frame(0.3, "client", text=f"token {EK}"),
        Frame(0.4, "client", binary=b"\x00" + ENV_KEY.encode() + b"\xff"),
    ]
    session = WebSocketSession(
        f"wss://api.openai.com/v1/realtime?model={MODEL}&token={EXTRA}", "ga", frames,
        request_headers={"Authorization": [f"Bearer {SK}"], "api-key": [AZURE_KEY], "Cookie": [COOKIE],
                         "Sec-WebSocket-Protocol": [f"realtime, openai-insecure-api-key.{BROWSER_KEY}"]},
        response_headers={"Set-Cookie": [f"{COOKIE}; path=/"], "Server": ["cloudflare"]},
        close={"code": 1000, "reason": "", "by": "client"},
    )
    ga_secrets = {
        "request": {"method": "POST", "uri": "https://api.openai.com/v1/realtime/client_secrets",
                    "body": json.dumps({"session": {"type": "realtime"}}),
                    "headers": {"authorization": [f"Bearer {SK}"]}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {"set-cookie": [COOKIE]},
                     "body": {"string": json.dumps({"value": GA_SECRET, "expires_at": 2, "session": {}})}},
    }
    beta_sessions = {
        "request": {"method": "POST", "uri": "https://api.openai.com/v1/realtime/sessions", "body": None,
                    "headers": {}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {},
                     "body": {"string": json.dumps({"id": "sess_1", "client_secret": {"value": EK}}).encode()}},
    }
    return Cassette({"origin": "recorded"}, [ga_secrets, session, beta_sessions])


def test_mask_shows_the_shape_never_the_secret() -> None:
    assert mask("sk-abcdefghijklmnopqrstuvwxyz1234") == "sk-...1234"
    assert mask("short") == "****"


def test_scrub_redacts_every_kind_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    cassette = leaky()
    before = cassette.dumps()

    hits = find_secrets(cassette, extra_values=[EXTRA])
    text = "\n".join(hits)
    for kind in ("Authorization header", "api-key header", "Cookie header", "Set-Cookie header",
                 "openai-insecure-api-key subprotocol", "OpenAI API key", "ephemeral key",
                 "client_secret.value", "ephemeral key (value)", "value of $OPENAI_API_KEY", "given secret value"):
        assert kind in text, kind
    assert "session 0 frame #0 event.item.content[0].text" in text
    assert "interaction 0 (POST /v1/realtime/client_secrets) response.body.string" in text
    assert all(secret not in hit for secret in SECRETS for hit in hits)

    scrubbed = scrub_cassette(cassette, extra_values=[EXTRA])
    dumped = scrubbed.dumps()
    assert all(secret not in dumped for secret in SECRETS)
    assert find_secrets(scrubbed, extra_values=[EXTRA]) == []
    assert cassette.dumps() == before  # the input is not touched

    reloaded = loads(dumped)
    session = reloaded.sessions[0]
    assert session.request_headers["Authorization"] == ["Bearer REDACTED"]
    assert session.request_headers["Sec-WebSocket-Protocol"] == ["realtime, openai-insecure-api-key.REDACTED"]
    assert session.response_headers["Server"] == ["cloudflare"]
    frames = session.frames
    assert frames[0].event is not None and BENIGN in frames[0].event["item"]["content"][0]["text"]
    assert frames[1].event is not None and frames[1].event["session"]["client_secret"]["value"] == "REDACTED"
    assert frames[2].event is not None and frames[2].event["delta"] == AUDIO
    assert frames[3].text == "token REDACTED"
    assert frames[4].binary == b"\x00REDACTED\xff"
    ga_body = json.loads(reloaded.http_interactions[0]["response"]["body"]["string"])
    assert ga_body == {"value": "REDACTED", "expires_at": 2, "session": {}}


async def test_a_recorded_cassette_holds_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"sk-test-{uuid.uuid4().hex}"
    token = f"ek_{uuid.uuid4().hex}"
    other = f"other-service-token-{uuid.uuid4().hex}"  # shapeless: only scrub_env identifies it
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("RTREPLAY_TEST_TOKEN", other)
    out = tmp_path / "secret.yaml"
    said = f"my key is {key} and my token is {token}, {other}"
    item: Any = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": said}]}

    async with (
        asyncio.timeout(30),
        ReplayServer(ga_cassette(), ServerOptions(speed=0, api_key=key)) as upstream,
        RecordingProxy(out, upstream=f"ws://127.0.0.1:{upstream.port}", scrub_env=["RTREPLAY_TEST_TOKEN"]) as proxy,
        AsyncOpenAI(base_url=proxy.http_base_url, max_retries=0) as client,  # the key comes from the env
    ):
        secret = await client.realtime.client_secrets.create(session={"type": "realtime", "model": MODEL})
        assert secret.value == EPHEMERAL
        async with client.realtime.connect(model=MODEL) as connection:
            await connection.conversation.item.create(item=item)
            async for event in connection:
                if event.type == "conversation.item.done":  # the server echoes the text back
                    break

    data = out.read_bytes()
    for secret_value in (key, token, other, EPHEMERAL):
        assert secret_value.encode() not in data
    recorded = load(out)
    assert find_secrets(recorded) == []
    echoed = [f for f in recorded.sessions[0].frames if f.type == "conversation.item.done"]
    assert echoed and echoed[0].event is not None
    assert echoed[0].event["item"]["content"][0]["text"] == "my key is REDACTED and my token is REDACTED, REDACTED"

    raw = Cassette({}, [WebSocketSession(f"wss://api.openai.com/v1/realtime?model={MODEL}", "ga",
                                         [Frame(0.0, "client", event={"type": "conversation.item.create",
                                                                      "item": item})],
                                         request_headers={"Authorization": [f"Bearer {key}"]})])
    hits = find_secrets(raw)
    assert len(hits) == 3  # the header, and the key and the token in the frame
    assert all(key not in hit and token not in hit for hit in hits)


def test_lint_secrets_fails_on_a_leaky_cassette_without_printing_it(tmp_path: Path) -> None:
    from cli import app

    path = tmp_path / "leaky.yaml"
    interactions: list[WebSocketSession | dict[str, Any]] = [*leaky().http_interactions]
    Cassette({}, interactions).save(path)  # HTTP only: the secrets are the only findings
    result = CliRunner().invoke(app, ["lint", "--secrets", str(path)])
    output = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 1
    assert "[secret] interaction 0 (POST /v1/realtime/client_secrets) request.headers.authorization" in output
    assert "sk-...Ab3_" in output
    assert SK not in output and GA_SECRET not in output
