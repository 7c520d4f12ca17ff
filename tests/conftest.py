from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from replay.engine.conversation import Conversation  # noqa: E402
from replay.wire.protocol import IdFactory  # noqa: E402

TRACES = ROOT.parent / "shared" / "traces" / "real"
CASSETTES = ROOT / "cassettes"


def b64(nbytes: int) -> str:
    import base64

    return base64.b64encode(bytes(nbytes)).decode()


class Script:
    """Feeds an engine server events as a recorded GA/beta response would, with audio in ms."""

    def __init__(self, engine: Conversation) -> None:
        self.engine = engine
        self.dialect = engine.dialect

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.engine.send_server(event)

    def user_item(self, item_id: str = "item_user") -> None:
        added = "conversation.item.added" if self.dialect == "ga" else "conversation.item.created"
        self.send({"type": added, "previous_item_id": None,
                   "item": {"id": item_id, "type": "message", "role": "user", "status": "completed",
                            "content": [{"type": "input_text", "text": "hi"}]}})

    def response_start(self, response_id: str = "resp_1", item_id: str = "item_a", *, held: bool = True,
                       part: str | None = "audio", modalities: list[str] | None = None) -> None:
        self.send({"type": "response.created", "response": {
            "object": "realtime.response", "id": response_id, "status": "in_progress", "status_details": None,
            "output": [], "output_modalities": modalities or ["audio"], "usage": None, "metadata": None}})
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        self.send({"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item})
        if held:
            added = "conversation.item.added" if self.dialect == "ga" else "conversation.item.created"
            self.send({"type": added, "previous_item_id": None, "item": item})
        if part is not None:
            self.send({"type": "response.content_part.added", "response_id": response_id, "item_id": item_id,
                       "output_index": 0, "content_index": 0,
                       "part": {"type": part, "transcript": ""} if part == "audio" else {"type": part, "text": ""}})

    def audio(self, ms: int, item_id: str = "item_a", response_id: str = "resp_1") -> None:
        name = "response.output_audio.delta" if self.dialect == "ga" else "response.audio.delta"
        self.send({"type": name, "response_id": response_id, "item_id": item_id, "output_index": 0,
                   "content_index": 0, "delta": b64(ms * 48)})

    def done(self, response_id: str = "resp_1") -> None:
        self.send({"type": "response.done", "response": {"id": response_id, "status": "completed", "output": [],
                                                          "usage": None}})


@pytest.fixture
def ga() -> Conversation:
    return Conversation("ga", ids=IdFactory(1))


@pytest.fixture
def beta() -> Conversation:
    return Conversation("beta", ids=IdFactory(1))


def send(engine: Conversation, event: dict[str, Any]) -> list[dict[str, Any]]:
    """Receive a client event and apply the engine's answer as the server would send it."""
    received = engine.receive_client(json.dumps(event))
    for reaction in received.reactions:
        engine.send_server(reaction)
    return received.reactions


def only_error(reactions: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(reactions) == 1 and reactions[0]["type"] == "error", reactions
    error = reactions[0]["error"]
    assert set(error) == {"type", "code", "message", "param", "event_id"}
    return error
