"""The GA/beta mapping: one table, kept in the docs, and sessions that survive the round trip."""

from __future__ import annotations

from pathlib import Path

from replay.wire import protocol as p
from replay.wire.dialect import mapping_table, normalize, session_to, session_to_ga

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_hold_the_table_the_code_uses() -> None:
    doc = (ROOT / "docs" / "server.md").read_text()
    block = doc.split("<!-- dialect table: start (replay.wire.dialect.mapping_table) -->\n")[1].split(
        "\n<!-- dialect table: end -->")[0]
    assert block == mapping_table()


def test_a_beta_session_reads_as_ga_and_renders_back() -> None:
    beta = p.default_session("beta", session_id="sess_1", model="gpt-4o-realtime-preview", created_at=0)
    beta.update(voice="verse", output_audio_format="g711_ulaw",
                turn_detection={"type": "server_vad", "interrupt_response": False})
    ga = session_to_ga(beta)
    assert ga["type"] == "realtime"
    assert ga["audio"]["output"] == {"voice": "verse", "format": {"type": "audio/pcmu"}, "speed": 1.0}
    assert ga["audio"]["input"]["turn_detection"]["interrupt_response"] is False
    assert ga["output_modalities"] == ["audio"] and "temperature" not in ga
    back = session_to(ga, "beta")
    for key in ("voice", "output_audio_format", "turn_detection", "instructions", "input_audio_format"):
        assert back[key] == beta[key], key
    assert back["modalities"] == ["audio", "text"] and "audio" not in back


def test_recorded_beta_events_normalize_to_ga_names_and_content_types() -> None:
    event = {"type": "conversation.item.created", "previous_item_id": None,
             "item": {"id": "item_1", "object": "realtime.item", "type": "message", "role": "assistant",
                      "content": [{"type": "audio", "transcript": "hi"}]}}
    ga = normalize(event, "beta")
    assert ga["type"] == "conversation.item.added"
    assert ga["item"]["content"] == [{"type": "output_audio", "transcript": "hi"}] and "object" not in ga["item"]
    assert normalize({"type": "response.audio.delta", "delta": ""}, "beta")["type"] == "response.output_audio.delta"
    assert normalize(event, "ga") is event
