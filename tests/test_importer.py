"""The importer: genuine traces become cassettes that keep what was captured and say where it came from."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from vcr.serialize import deserialize
from vcr.serializers import yamlserializer

from replay.authoring.importer import ImportFailed, detect_dialect, import_trace
from replay.authoring.synth import check_with_engine
from replay.cassettes.cassette import Frame, expand_audio, load

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "real"
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason="shared/traces/real is not beside the checkout")


def trace_lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (TRACES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def ev(frame: Frame) -> dict[str, Any]:
    assert frame.event is not None
    return frame.event


def all_traces() -> list[str]:
    return sorted(p.name for p in TRACES.glob("*.jsonl")) if TRACES.is_dir() else []


def write(tmp_path: Path, lines: list[Any] | str, name: str = "trace.jsonl") -> Path:
    path = tmp_path / name
    text = lines if isinstance(lines, str) else "\n".join(json.dumps(x) for x in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- genuine traces


@needs_traces
@pytest.mark.parametrize("name", all_traces())
def test_every_real_trace_imports_with_every_event_and_its_provenance(name: str, tmp_path: Path) -> None:
    lines = trace_lines(name)
    meta = lines[0]["_meta"]
    cassette = import_trace(TRACES / name)
    session = cassette.sessions[0]
    assert len(session.frames) == len(lines) - 1 == cassette.metadata["frames"]
    assert [f.type for f in session.frames] == [x["type"] for x in lines[1:]]
    assert [f.source for f in session.frames] == [x["direction"] for x in lines[1:]]
    expected = "beta" if name.startswith(("banyan", "liusida")) else "ga"
    assert session.dialect == expected
    md = cassette.metadata
    assert md["origin"] == "imported" and md["complete"] is True
    assert md["source"] == f"{meta['source_repo']}/{meta['path']}@{meta['commit']}"
    assert md["license"] == meta["license"]
    assert md["tool"].startswith("rtreplay ")
    assert md["timing"] == "synthesized"  # none of these captures has timestamps
    # Saved, it is a cassette vcrpy and our loader both read back unchanged.
    saved = cassette.save(tmp_path / "c.yaml")
    deserialize(saved.read_text(encoding="utf-8"), yamlserializer)
    again = load(saved)
    assert [f.event for f in again.sessions[0].frames] == [f.event for f in session.frames]


@needs_traces
def test_text_in_audio_out_keeps_payloads_as_found_and_flags_the_source_truncation() -> None:
    lines = trace_lines("pydantic_openai_ga_text_in_audio_out.jsonl")
    cassette = import_trace(TRACES / "pydantic_openai_ga_text_in_audio_out.jsonl")
    session = cassette.sessions[0]
    assert session.uri == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert session.model == cassette.metadata["model"] == "gpt-realtime"
    assert session.request_headers == {}  # GA: no beta header
    deltas = [ev(f)["delta"] for f in session.frames if f.type == "response.output_audio.delta"]
    assert deltas == [x["delta"] for x in lines if x.get("type") == "response.output_audio.delta"]
    assert cassette.metadata["audio_truncated_at_source"] is True
    assert cassette.metadata["audio_payload_bytes"] == len(base64.b64decode(deltas[0]))
    assert all("direction" not in ev(f) for f in session.frames)
    times = [f.t for f in session.frames]
    assert times[0] == 0.0 and times[1] == pytest.approx(0.005) and times == sorted(times)
    assert cassette.metadata["recorded_at"] is not None  # from session.created's expires_at


@needs_traces
def test_compact_replaces_audio_by_size_and_replay_restores_that_many_bytes() -> None:
    cassette = import_trace(TRACES / "pydantic_openai_ga_server_vad_audio_turn.jsonl", compact=True)
    frames = cassette.sessions[0].frames
    append = next(f for f in frames if f.type == "input_audio_buffer.append")
    delta = next(f for f in frames if f.type == "response.output_audio.delta")
    assert ev(append)["audio"]["$audio"]["bytes"] == 33
    assert ev(delta)["delta"]["$audio"]["bytes"] == 33
    assert len(base64.b64decode(expand_audio(ev(delta))["delta"])) == 33
    assert cassette.metadata["audio_compacted"] is True


@needs_traces
def test_elided_client_frames_keep_only_their_type() -> None:
    cassette = import_trace(TRACES / "banyan_webrtc_beta_single_bargein.jsonl")
    assert cassette.metadata["client_frames_elided"] is True
    session = cassette.sessions[0]
    assert session.request_headers == {"OpenAI-Beta": ["realtime=v1"]}
    create = next(f for f in session.frames if f.type == "conversation.item.create")
    assert create.source == "client" and create.event == {"type": "conversation.item.create"}
    update = next(f for f in session.frames if f.type == "session.update")
    assert "instructions" in ev(update)["session"]  # logged in full, kept in full
    assert not any(k.startswith("_") for f in session.frames for k in ev(f))


@needs_traces
def test_a_model_described_in_words_is_kept_as_a_note_not_put_in_the_url() -> None:
    cassette = import_trace(TRACES / "liusida_ws_beta_text_only_response.jsonl")
    assert cassette.metadata["model"] is None
    assert "exact model not logged" in cassette.metadata["model_note"]
    assert cassette.sessions[0].model == "gpt-4o-realtime-preview"
    # Markers nested inside events (what util.inspect hid) are part of the event and stay.
    assert "_elided_by_util_inspect" in json.dumps([f.event for f in cassette.sessions[0].frames])


@needs_traces
@pytest.mark.parametrize("name", [n for n in all_traces() if not n.startswith("banyan")])
def test_real_traces_replay_through_the_engine_firing_only_the_recorded_errors(name: str) -> None:
    check = check_with_engine(import_trace(TRACES / name).sessions[0])
    assert check.notes == []
    assert [code for *_, code in check.fired] == [code for _, code in check.recorded_errors]


@needs_traces
def test_history_seeding_error_is_the_engine_rule_for_assistant_text_content() -> None:
    check = check_with_engine(import_trace(TRACES / "pydantic_openai_ga_history_seeding_error.jsonl").sessions[0])
    assert [(etype, rule, code) for _, etype, rule, code in check.fired] == [
        ("conversation.item.create", "T13c", "invalid_value")]


@needs_traces
def test_banyan_rules_fire_only_on_the_client_frames_the_log_elided() -> None:
    cassette = import_trace(TRACES / "banyan_webrtc_beta_multi_bargein.jsonl")
    frames = cassette.sessions[0].frames
    check = check_with_engine(cassette.sessions[0])
    assert check.notes == []
    assert all(frames[i].event == {"type": frames[i].type} for i, *_ in check.fired)


# ---------------------------------------------------------------------------- JSON Lines details


def test_recorded_times_directions_and_conversion_fields(tmp_path: Path) -> None:
    path = write(tmp_path, [
        {"_meta": {"source_repo": "me/repo", "path": "log.txt", "commit": "abc", "license": "MIT",
                   "model": "gpt-realtime", "capture": "by hand"}},
        {"type": "session.created", "event_id": "event_1", "session": {"type": "realtime", "model": "x"}, "_t": 0.004},
        {"type": "session.update", "session": {"type": "realtime"}, "_t": 0.05, "_note": "added later"},
        {"type": "session.updated", "event_id": "event_2", "session": {"type": "realtime"}, "_t": 0.3},
    ])
    cassette = import_trace(path, source="override", license="Apache-2.0")
    frames = cassette.sessions[0].frames
    assert [f.t for f in frames] == [0.004, 0.05, 0.3]
    assert [f.source for f in frames] == ["server", "client", "server"]  # inferred from the type
    assert frames[1].event == {"type": "session.update", "session": {"type": "realtime"}}
    md = cassette.metadata
    assert md["timing"] == "recorded"
    assert (md["source"], md["license"], md["model"], md["capture"]) == ("override", "Apache-2.0", "gpt-realtime",
                                                                          "by hand")
    assert cassette.sessions[0].dialect == "ga"  # session.type only exists in GA


def test_dialect_detection() -> None:
    assert detect_dialect([{"type": "response.audio.delta"}, {"type": "conversation.item.created"}]) == "beta"
    assert detect_dialect([{"type": "response.output_text.delta"}]) == "ga"
    assert detect_dialect([{"type": "response.created", "response": {"output_modalities": ["audio"]}}]) == "ga"
    assert detect_dialect([{"type": "session.created", "session": {"modalities": ["text"]}}]) == "beta"


# ---------------------------------------------------------------------------- bad input


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "\n\n")
    with pytest.raises(ImportFailed, match="empty file") as info:
        import_trace(path)
    assert str(path) in str(info.value)


def test_not_json_on_line_3_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '{"_meta": {}}\n{"type": "session.created"}\n{"type": oops}\n')
    with pytest.raises(ImportFailed) as info:
        import_trace(path)
    assert f"{path}:3: not valid JSON" in str(info.value)


def test_a_line_without_type_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, [{"type": "session.created"}, {"type": "session.updated"}, {"event_id": "x"}])
    with pytest.raises(ImportFailed, match=r":3: event has no string 'type'"):
        import_trace(path)


@pytest.mark.parametrize(("text", "expected"), [
    ('{"type": "a"}\n[1, 2]\n', r":2: expected a JSON object per line, got an array"),
    ('{"type": "a"}\n{"_meta": {}}\n', r":2: a _meta record is only allowed on the first line"),
    ('{"type": "a", "direction": "up"}\n', r":1: 'direction' must be 'client' or 'server'"),
    ('{"type": "a", "_t": "soon"}\n', r":1: '_t' must be a number"),
    ('{"_meta": {"license": "MIT"}}\n', r"no events found"),
    ("just some text\n", r":1: expected JSON Lines"),
])
def test_other_bad_input_is_a_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ImportFailed, match=expected):
        import_trace(write(tmp_path, text))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="no such capture file"):
        import_trace(tmp_path / "nope.jsonl")
    with pytest.raises(ImportFailed, match="is a directory"):
        import_trace(tmp_path)


def test_bad_audio_base64_when_compacting(tmp_path: Path) -> None:
    path = write(tmp_path, [{"type": "session.created"}, {"type": "input_audio_buffer.append", "audio": "!!!"}])
    with pytest.raises(ImportFailed, match=r":2: input_audio_buffer.append: audio payload is not base64"):
        import_trace(path, compact=True)


# ---------------------------------------------------------------------------- pydantic-ai YAML


def pydantic_yaml(events: list[dict[str, Any]], *, at: bool = True,
                  closes: dict[int, dict[str, Any]] | None = None) -> str:
    """A cassette as pydantic-ai's tests/realtime/ws_cassettes.py dumps it (kind, direction, at, data)."""
    interactions: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        data = {k: v for k, v in event.items() if not k.startswith("_") and k != "direction"}
        direction = "sent" if event["direction"] == "client" else "received"
        entry: dict[str, Any] = {"kind": "message", "direction": direction}
        if at:
            entry["at"] = round(0.01 * i, 3)
        entry["data"] = data
        interactions.append(entry)
        if closes and i in closes:
            interactions.append({"kind": "close", **closes[i]})
    return yaml.safe_dump({"version": 1, "interactions": interactions}, sort_keys=False, allow_unicode=True)


@needs_traces
def test_pydantic_ai_cassette_imports_like_its_jsonl_conversion(tmp_path: Path) -> None:
    name = "pydantic_openai_ga_tool_call_round.jsonl"
    events = trace_lines(name)[1:]
    path = write(tmp_path, pydantic_yaml(events), "cassette.yaml")
    from_yaml = import_trace(path, source="pydantic/pydantic-ai/x.yaml@abc", license="MIT")
    from_jsonl = import_trace(TRACES / name)
    assert [(f.source, f.event) for f in from_yaml.sessions[0].frames] == \
        [(f.source, f.event) for f in from_jsonl.sessions[0].frames]
    assert from_yaml.metadata["timing"] == "recorded"
    assert from_yaml.sessions[0].frames[3].t == pytest.approx(0.03)
    assert from_yaml.metadata["format"] == "pydantic-ai ws cassette"
    assert from_yaml.metadata["source"] == "pydantic/pydantic-ai/x.yaml@abc"


@needs_traces
def test_pydantic_ai_reconnect_becomes_two_sessions_with_their_closes(tmp_path: Path) -> None:
    events = trace_lines("pydantic_openai_ga_text_in_audio_out.jsonl")[1:]
    closes = {9: {"code": 1011, "reason": "test reconnect", "ok": False},
              len(events) - 1: {"code": 1000, "reason": "", "ok": True}}
    cassette = import_trace(write(tmp_path, pydantic_yaml(events, closes=closes), "c.yaml"))
    first, second = cassette.sessions
    assert len(first.frames) == 10 and len(second.frames) == len(events) - 10
    assert first.close is not None and first.close["code"] == 1011 and first.close["reason"] == "test reconnect"
    assert second.close is not None and second.close["code"] == 1000
    assert second.frames[0].t == 0.0  # the new socket's own clock
    assert cassette.metadata["sessions"] == 2


def test_pydantic_ai_frame_without_type_names_its_line(tmp_path: Path) -> None:
    text = yaml.safe_dump({"version": 1, "interactions": [
        {"kind": "message", "direction": "received", "data": {"type": "session.created"}},
        {"kind": "message", "direction": "received", "data": {"serverContent": {"turnComplete": True}}},
    ]}, sort_keys=False)
    path = write(tmp_path, text, "gemini.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("- ") and i > 3)
    with pytest.raises(ImportFailed, match=rf"gemini.yaml:{line}: interactions\[1\].data has no string 'type'"):
        import_trace(path)


def test_a_vcrpy_cassette_is_not_imported_twice(tmp_path: Path) -> None:
    text = yaml.safe_dump({"version": 1, "interactions": [{"request": {}, "response": {}}]})
    with pytest.raises(ImportFailed, match="already a vcrpy cassette"):
        import_trace(write(tmp_path, text, "c.yaml"))


# ---------------------------------------------------------------------------- rtreplay's own wire logs


def test_a_wire_log_from_check_imports_and_replays(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    logs, report = tmp_path / "logs", tmp_path / "imported.json"
    result = runner.invoke(app, ["check", "--client", "reference-fixed", "--cassette", "ga_text_turn_audio_response",
                                 "--case", "RT-INT-6", "--speed", "0", "--logs", str(logs)])
    assert result.exit_code == 0, result.output
    log = logs / "RT-INT-6.jsonl"
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    cassette = import_trace(log)
    assert cassette.metadata["format"] == "rtreplay wire log" and cassette.metadata["timing"] == "recorded"
    assert "case RT-INT-6" in cassette.metadata["capture"] and "client reference-fixed" in cassette.metadata["capture"]
    [session] = cassette.sessions
    assert [(f.source, f.type) for f in session.frames] == [(e["dir"], e["event"]["type"]) for e in entries
                                                            if "event" in e]
    assert session.dialect == "ga" and session.model == "gpt-realtime"
    saved = cassette.save(tmp_path / "from-log.yaml")
    assert load(saved).sessions[0].frames == session.frames
    result = runner.invoke(app, ["check", "--client", "reference-fixed", "--cassette", str(saved), "--speed", "0",
                                 "--json", str(report)])
    assert result.exit_code == 0, result.output
    verdicts = {case["verdict"] for case in json.loads(report.read_text())["cases"]}
    assert verdicts == {"OK"}


@pytest.mark.parametrize(("lines", "expected"), [
    ([{"mark": "case", "case": "RT-INT-1"}, {"t": 0.1, "dir": "upstream", "event": {"type": "x"}}],
     "trace.jsonl:2: a wire log entry is a 'mark' or has 'dir' client or server, got 'upstream'"),
    ([{"t": 0.1, "dir": "server", "event": {"type": "session.created"}}, {"t": "soon", "dir": "client",
                                                                          "event": {"type": "response.create"}}],
     "trace.jsonl:2: 't' must be a number of seconds, got 'soon'"),
    ([{"mark": "case"}, {"t": 0.1, "dir": "server", "event": ["session.created"]}],
     "trace.jsonl:2: 'event' must be an object with a string 'type'"),
])
def test_a_broken_wire_log_names_the_line(tmp_path: Path, lines: list[Any], expected: str) -> None:
    with pytest.raises(ImportFailed, match=re.escape(expected)):
        import_trace(write(tmp_path, lines))
