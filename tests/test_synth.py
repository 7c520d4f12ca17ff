"""Synthesized and bundled cassettes: readable by vcrpy, faithful to the documented order, reproducible."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from vcr.serialize import deserialize
from vcr.serializers import yamlserializer

from replay.authoring.synth import CASSETTES, CREATED_AT, SOURCE, build_all, check_with_engine, tokens
from replay.cassettes.cassette import Cassette, expand_audio, load
from replay.engine.conversation import Conversation

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "cassettes"
TRACES = REPO.parent / "shared" / "traces" / "real"
SCRIPT = REPO / "scripts" / "make_cassettes.py"
REQUIRED = ("ga_text_turn_audio_response", "ga_server_vad_turn", "beta_audio_response", "ga_text_only_response",
            "ga_function_call_round")
ZERO_4800 = hashlib.sha256(bytes(4800)).hexdigest()
SERVER_ID = re.compile(r"^(event|item|resp|sess|conv)_[0-9A-Za-z]{21}$")


@pytest.fixture(scope="module")
def built() -> dict[str, Cassette]:
    return build_all()


def types(cassette: Cassette, *, collapse: bool = True) -> list[str]:
    """Event types in order; runs of the same delta/append collapse to one entry."""
    out: list[str] = []
    for frame in cassette.sessions[0].frames:
        name = f"{frame.source}:{frame.type}"
        if collapse and out and out[-1] == name and name.endswith((".delta", ".append")):
            continue
        out.append(name)
    return out


def events(cassette: Cassette, etype: str) -> list[dict[str, Any]]:
    return [f.event for f in cassette.sessions[0].frames if f.type == etype and f.event is not None]


def at(cassette: Cassette, etype: str, nth: int = 0) -> float:
    return [f.t for f in cassette.sessions[0].frames if f.type == etype][nth]


# ---------------------------------------------------------------------------- bundled files


def bundled() -> list[str]:
    return sorted(p.name for p in BUNDLED.glob("*.yaml"))


def test_the_required_cassettes_are_bundled() -> None:
    names = set(bundled())
    assert {f"{n}.yaml" for n in REQUIRED} <= names
    if TRACES.is_dir():
        assert "real_pydantic_openai_ga_text_in_audio_out.yaml" in names
    assert not any(n.startswith("real_banyan") for n in names)  # no licence: never bundled
    readme = (BUNDLED / "README.md").read_text(encoding="utf-8")
    assert all(f"`{n}`" in readme for n in names)


@pytest.mark.parametrize("name", bundled())
def test_bundled_cassette_reads_in_vcrpy_and_replays_through_the_engine(name: str) -> None:
    text = (BUNDLED / name).read_text(encoding="utf-8")
    deserialize(text, yamlserializer)
    cassette = load(BUNDLED / name)
    assert cassette.metadata["frames"] == sum(len(s.frames) for s in cassette.sessions)
    assert cassette.metadata["origin"] in ("synthesized", "imported")
    assert cassette.metadata["license"] == "MIT"
    for session in cassette.sessions:
        check = check_with_engine(session)
        assert check.notes == []
        # A rule may fire only where the recording shows the real server refusing the same event.
        assert [code for *_, code in check.fired] == [code for _, code in check.recorded_errors]


@pytest.mark.parametrize("name", list(CASSETTES))
def test_synthesized_sessions_fire_no_rule(built: dict[str, Cassette], name: str) -> None:
    check = check_with_engine(built[name].sessions[0])
    assert check.clean, (check.fired, check.notes)
    assert check.recorded_errors == []


def test_make_cassettes_is_deterministic_and_the_bundle_is_current(tmp_path: Path) -> None:
    runs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr
        runs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert runs[0] == runs[1]
    assert {f"{n}.yaml" for n in CASSETTES} <= set(runs[0])
    if TRACES.is_dir():  # with the traces present the script rebuilds exactly what is bundled
        current = {p.name: p.read_bytes() for p in sorted(BUNDLED.iterdir()) if p.is_file()}
        stale = sorted(n for n in runs[0] if current.get(n) != runs[0][n])
        assert stale == [], f"cassettes/ is stale, run scripts/make_cassettes.py: {stale}"


# ---------------------------------------------------------------------------- what the cassettes show


def test_metadata_says_synthesized_and_fixed(built: dict[str, Cassette]) -> None:
    for cassette in built.values():
        md = cassette.metadata
        assert (md["origin"], md["source"], md["license"], md["complete"]) == ("synthesized", SOURCE, "MIT", True)
        assert md["recorded_at"] == "2026-01-01T12:00:00Z"
        assert md["frames"] == len(cassette.sessions[0].frames)


def test_ga_text_turn_follows_the_documented_order(built: dict[str, Cassette]) -> None:
    c = built["ga_text_turn_audio_response"]
    order = types(c)
    streamed = ("server:response.output_audio_transcript.delta", "server:response.output_audio.delta")
    first = order.index(streamed[0])
    last = max(i for i, name in enumerate(order) if name in streamed)
    assert [*order[:first], "<deltas>", *order[last + 1:]] == [
        "server:session.created", "client:session.update", "server:session.updated",
        "client:conversation.item.create", "client:response.create",
        "server:conversation.item.added", "server:conversation.item.done",
        "server:response.created", "server:response.output_item.added", "server:conversation.item.added",
        "server:response.content_part.added",
        "<deltas>",
        "server:response.output_audio.done", "server:response.output_audio_transcript.done",
        "server:response.content_part.done", "server:conversation.item.done", "server:response.output_item.done",
        "server:response.done", "server:rate_limits.updated",
    ]
    # transcript and audio deltas interleave, the transcript running ahead
    assert set(order[first:last + 1]) == set(streamed) and order[first] == streamed[0]
    assert order[first:last + 1].count(streamed[1]) > 1
    deltas = events(c, "response.output_audio.delta")
    assert len(deltas) == 12
    assert all(d["delta"] == {"$audio": {"bytes": 4800, "sha256": ZERO_4800}} for d in deltas)
    transcript = events(c, "response.output_audio_transcript.done")[0]["transcript"]
    pieces = events(c, "response.output_audio_transcript.delta")
    assert "".join(p["delta"] for p in pieces) == transcript
    assert all(10 <= len(p["obfuscation"]) <= 16 for p in pieces)
    part = events(c, "response.content_part.added")[0]["part"]
    assert part == {"type": "audio", "transcript": ""}
    done = events(c, "response.done")[0]["response"]
    assert done["status"] == "completed" and done["usage"]["output_token_details"]["audio_tokens"] == 24
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]


def test_ga_session_updated_is_the_full_merged_session(built: dict[str, Cassette]) -> None:
    c = built["ga_text_turn_audio_response"]
    created = events(c, "session.created")[0]["session"]
    updated = events(c, "session.updated")[0]["session"]
    assert set(updated) == set(created)
    assert updated["instructions"] == events(c, "session.update")[0]["session"]["instructions"]
    assert updated["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200  # kept from the default
    assert created["expires_at"] == CREATED_AT + 3600


def test_timing_is_realistic(built: dict[str, Cassette]) -> None:
    c = built["ga_text_turn_audio_response"]
    requested = at(c, "response.create")
    assert at(c, "response.created") - requested == pytest.approx(0.28, abs=0.01)
    first = at(c, "response.output_audio_transcript.delta")
    assert first - requested == pytest.approx(0.476, abs=0.01)
    # 1.2 s of audio goes out in well under 1.2 s: the server generates faster than real time.
    assert at(c, "response.output_audio.delta", 11) - first < 0.6
    assert at(c, "rate_limits.updated") - at(c, "response.done") == pytest.approx(0.04, abs=0.005)


def test_ids_have_the_real_shape(built: dict[str, Cassette]) -> None:
    for cassette in built.values():
        for frame in cassette.sessions[0].frames:
            if frame.source == "server":
                assert frame.event is not None and SERVER_ID.match(frame.event["event_id"])


def test_text_only_item_done_comes_before_output_item_done(built: dict[str, Cassette]) -> None:
    c = built["ga_text_only_response"]
    order = types(c)
    assert order.index("server:response.output_text.done") < order.index("server:response.content_part.done")
    tail = order[order.index("server:response.content_part.done") + 1:]
    assert tail[:3] == ["server:conversation.item.done", "server:response.output_item.done", "server:response.done"]
    assert events(c, "response.content_part.added")[0]["part"] == {"type": "text", "text": ""}
    assert events(c, "session.updated")[0]["session"]["output_modalities"] == ["text"]
    assert not events(c, "response.output_audio.delta")
    text = events(c, "response.output_text.done")[0]["text"]
    assert "".join(e["delta"] for e in events(c, "response.output_text.delta")) == text


def test_beta_cassette_speaks_beta(built: dict[str, Cassette]) -> None:
    c = built["beta_audio_response"]
    session = c.sessions[0]
    assert session.dialect == "beta"
    assert session.request_headers == {"OpenAI-Beta": ["realtime=v1"]}
    assert session.model == "gpt-4o-realtime-preview-2024-12-17"
    order = types(c)
    assert order[:2] == ["server:session.created", "server:conversation.created"]
    assert "server:conversation.item.created" in order and "server:response.audio.delta" in order
    ga_only = ("server:conversation.item.added", "server:conversation.item.done", "server:response.output_audio.delta")
    assert not [t for t in order if t in ga_only]
    assert "modalities" in events(c, "session.update")[0]["session"]  # flat, no session.type
    assert order[-2:] == ["server:response.output_item.done", "server:response.done"]
    assert all("obfuscation" not in e for e in events(c, "response.audio_transcript.delta"))
    assert events(c, "response.output_item.added")[0]["item"]["object"] == "realtime.item"


def test_function_call_round(built: dict[str, Cassette]) -> None:
    c = built["ga_function_call_round"]
    added = events(c, "response.output_item.added")
    call = added[0]["item"]
    assert call["type"] == "function_call" and call["arguments"] == "" and call["call_id"].startswith("call_")
    done = events(c, "response.function_call_arguments.done")[0]
    assert "".join(e["delta"] for e in events(c, "response.function_call_arguments.delta")) == done["arguments"]
    creates = events(c, "conversation.item.create")
    assert creates[1]["item"] == {"type": "function_call_output", "call_id": call["call_id"],
                                  "output": creates[1]["item"]["output"]}
    order = types(c)
    first_done = order.index("server:response.done")
    assert order.index("client:conversation.item.create", 4) > first_done  # the output comes after the call ends
    assert len(events(c, "response.output_audio.delta")) == 10
    assert [r["response"]["status"] for r in events(c, "response.done")] == ["completed", "completed"]


def test_server_vad_turn(built: dict[str, Cassette]) -> None:
    c = built["ga_server_vad_turn"]
    appends = events(c, "input_audio_buffer.append")
    assert len(appends) == 50 and all(a["audio"]["$audio"]["bytes"] == 4800 for a in appends)
    started = events(c, "input_audio_buffer.speech_started")[0]
    stopped = events(c, "input_audio_buffer.speech_stopped")[0]
    committed = events(c, "input_audio_buffer.committed")[0]
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert 0 < started["audio_start_ms"] < stopped["audio_end_ms"] <= 50 * 100
    user = events(c, "conversation.item.added")[0]["item"]
    assert user["id"] == committed["item_id"] and user["content"] == [{"type": "input_audio", "transcript": None}]
    assert "client:response.create" not in types(c)  # the server answers on its own
    assert len(events(c, "response.output_audio.delta")) == 10
    # speech_started arrives only after the append carrying that audio was sent
    frames = c.sessions[0].frames
    sent_ms = 0
    for frame in frames:
        if frame.type == "input_audio_buffer.append":
            sent_ms += 100
        if frame.type == "input_audio_buffer.speech_started":
            assert sent_ms >= started["audio_start_ms"] + 300
            break


def test_model_items_done_follow_the_capture_quirk(built: dict[str, Cassette]) -> None:
    c = built["ga_two_responses_audio"]
    added = [e for e in events(c, "conversation.item.added") if e["item"]["role"] == "assistant"]
    done = [e for e in events(c, "conversation.item.done") if e["item"]["role"] == "assistant"]
    first_user = events(c, "conversation.item.added")[0]["item"]["id"]
    assert added[0]["previous_item_id"] == first_user and done[0]["previous_item_id"] is None
    assert done[1]["previous_item_id"] == added[1]["previous_item_id"] is not None


# ---------------------------------------------------------------------------- replaying them


def replay_until(cassette: Cassette, stop: int) -> Conversation:
    session = cassette.sessions[0]
    engine = Conversation(session.dialect, model=session.model)
    for frame in session.frames[: stop + 1]:
        assert frame.event is not None
        if frame.source == "client":
            assert engine.receive_event(frame.event).rule is None
        else:
            engine.send_server(expand_audio(frame.event))
    return engine


@pytest.mark.parametrize("name", ["ga_text_turn_audio_response", "beta_audio_response", "ga_server_vad_turn"])
def test_a_barge_in_mid_response_cancels_it_and_the_played_audio_can_be_truncated(
        built: dict[str, Cassette], name: str) -> None:
    c = built[name]
    frames = c.sessions[0].frames
    delta_type = "response.audio.delta" if c.sessions[0].dialect == "beta" else "response.output_audio.delta"
    fifth = [i for i, f in enumerate(frames) if f.type == delta_type][4]
    engine = replay_until(c, fifth)
    event = frames[fifth].event
    assert event is not None
    item_id = event["item_id"]
    reply = engine.barge_in()
    for event in reply:
        engine.send_server(event)
    assert reply[0]["type"] == "input_audio_buffer.speech_started"
    assert reply[-1]["response"]["status"] == "cancelled"
    assert reply[-1]["response"]["status_details"]["reason"] == "turn_detected"
    ok = engine.receive_event({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                               "audio_end_ms": 500})
    assert ok.rule is None and ok.reactions[0]["type"] == "conversation.item.truncated"
    too_far = replay_until(c, fifth).receive_event(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 501})
    assert too_far.rule == "T2"  # only 5 x 100 ms had been produced


def test_tokens_split_like_the_server_streams() -> None:
    assert tokens("Hi there! It's 5.") == ["Hi", " there", "!", " It's", " 5", "."]
