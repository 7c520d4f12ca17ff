"""The cassette format: vcrpy-compatible, safe to load, clear when broken, atomic to save."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import yaml
from vcr.serialize import deserialize
from vcr.serializers import yamlserializer

from replay.cassettes.cassette import (
    Cassette,
    CassetteError,
    Frame,
    WebSocketSession,
    compact_audio,
    expand_audio,
    load,
    loads,
)

from .conftest import CASSETTES

GOOD = CASSETTES / "ga_text_turn_audio_response.yaml"


def test_vcrpy_reads_our_cassettes_with_its_own_deserializer() -> None:
    requests, responses, metadata = deserialize(GOOD.read_text(encoding="utf-8"), yamlserializer)
    assert metadata["origin"] == "synthesized"  # vcrpy carries cassette metadata through, as we use it
    assert requests[0].method == "GET" and requests[0].uri.startswith("wss://api.openai.com/v1/realtime?model=")
    assert responses[0]["status"]["code"] == 101
    assert responses[0]["websocket"]["dialect"] == "ga"


def test_round_trip_keeps_every_frame(tmp_path: Path) -> None:
    cassette = load(GOOD)
    copy = cassette.save(tmp_path / "copy.yaml")
    again = load(copy)
    assert [f.to_dict() for f in again.sessions[0].frames] == [f.to_dict() for f in cassette.sessions[0].frames]
    assert again.metadata == cassette.metadata


@pytest.mark.parametrize(("text", "message"), [
    ("interactions: [\n  - request: {", "not valid YAML (line"),
    ("- just a list", "a cassette is a mapping"),
    ("version: 2\ninteractions: []", "unsupported cassette version 2"),
    ("version: 1\ninteractions: {}", "'interactions' must be a list"),
    ("version: 1\ninteractions: [{request: {}}]", "interactions[0]: needs a 'request' and a 'response'"),
    ("version: 1\ninteractions: [{request: {uri: x}, response: {websocket: {dialect: v3, frames: []}}}]",
     "dialect: must be 'beta' or 'ga', got 'v3'"),
    ("version: 1\ninteractions: [{request: {uri: x}, response: {websocket: {dialect: ga, frames: "
     "[{t: 1, from: server, event: {type: a}}, {t: 0.5, from: server, event: {type: b}}]}}}]",
     "frames[1].t: 0.5 goes back in time"),
    ("version: 1\ninteractions: [{request: {uri: x}, response: {websocket: {dialect: ga, frames: "
     "[{t: 0, from: nobody, event: {type: a}}]}}}]", "frames[0].from: must be 'client' or 'server'"),
    ("version: 1\ninteractions: [{request: {uri: x}, response: {websocket: {dialect: ga, frames: "
     "[{t: 0, from: server, event: {no_type: 1}}]}}}]", "frames[0].event: must be a mapping with a string 'type'"),
    ("!!python/object/apply:os.system ['echo pwned']", "not valid YAML"),
    ("version: 1\ninteractions: [{request: {uri: x}, response: {websocket: {dialect: ga, frames: "
     "[{t: 0, from: server, event: {type: a, x: !!seq abc}}]}}}]", "expected a sequence node, but found scalar"),
])
def test_broken_cassettes_give_one_clear_error_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(CassetteError) as info:
        loads(text, "broken.yaml")
    assert str(info.value).startswith("broken.yaml")
    assert message in str(info.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match="no such cassette file"):
        load(tmp_path / "nope.yaml")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CassetteError, match="not a text file"):
        load(binary)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    target.write_text("old content")
    cassette = load(GOOD)
    cassette.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]
    assert load(target).sessions

    class Boom(Exception):
        pass

    def explode() -> str:
        raise Boom

    cassette.dumps = explode  # type: ignore[method-assign]
    with pytest.raises(Boom):
        cassette.save(target)
    assert load(target).sessions  # the previous file survived whole
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


def test_compacted_audio_replays_as_exactly_that_much_silence() -> None:
    payload = base64.b64encode(b"\x01\x02" * 2400).decode()
    event = {"type": "response.output_audio.delta", "item_id": "i", "delta": payload}
    compacted = compact_audio(event)
    assert compacted["delta"] == {"$audio": {"bytes": 4800,
                                             "sha256": hashlib.sha256(b"\x01\x02" * 2400).hexdigest()}}
    assert base64.b64decode(expand_audio(compacted)["delta"]) == bytes(4800)
    assert compact_audio({"type": "response.output_audio.delta", "delta": "not base64!"})["delta"] == "not base64!"
    append = compact_audio({"type": "input_audio_buffer.append", "audio": payload})
    assert append["audio"]["$audio"]["bytes"] == 4800


def test_text_and_binary_frames_survive_a_round_trip(tmp_path: Path) -> None:
    frames = [Frame(0.0, "client", text="{not json"), Frame(0.1, "client", binary=b"\x00\x01"),
              Frame(0.2, "server", event={"type": "error", "error": {}})]
    session = WebSocketSession("wss://api.openai.com/v1/realtime?model=gpt-realtime", "ga", frames,
                               close={"code": 1000, "reason": "", "by": "client"})
    again = load(Cassette({"origin": "recorded"}, [session]).save(tmp_path / "raw.yaml")).sessions[0]
    assert again.frames[0].text == "{not json" and again.frames[1].binary == b"\x00\x01"
    assert again.close == {"code": 1000, "reason": "", "by": "client"} and again.model == "gpt-realtime"


@pytest.mark.parametrize("event", [
    "{type: a, shared: &s {x: 1}, again: *s, list: [*s, *s]}",
    "{type: a, base: &b {x: 1, y: 2}, derived: {<<: *b, y: 3}}",
    "{type: a, o: !!omap [{a: 1}, {b: 2}], s: !!set {a, b}, p: !!pairs [{a: 1}, {a: 2}]}",
    "{type: a, t: 2026-01-01 12:00:00, d: 2026-01-01, b: !!binary aGVsbG8=, f: .inf, n: ~, y: yes, h: 0x1F}",
    "{type: a, quoted: '1', empty: '', bare: , keys: {1: a, 2.5: b, null: c, true: d}, n: !!str 12}",
])
def test_every_yaml_feature_loads_as_pyyaml_loads_it(event: str) -> None:
    text = f"version: 1\ninteractions: [{{request: {{uri: x}}, response: {{websocket: {{dialect: ga, frames: " \
           f"[{{t: 0, from: server, event: {event}}}]}}}}}}]"
    loaded = loads(text).sessions[0].frames[0].event
    expected = yaml.safe_load(text)["interactions"][0]["response"]["websocket"]["frames"][0]["event"]
    assert repr(loaded) == repr(expected)
    if "shared" in event:
        assert loaded["again"] is loaded["shared"]  # an alias is one object, as PyYAML makes it


def test_a_node_that_contains_itself_is_refused() -> None:
    """PyYAML builds it; nothing downstream can walk it (JSON output, scrubbing), so the loader says so."""
    text = ("version: 1\ninteractions: [{request: {uri: x}, response: {websocket: {dialect: ga, frames: "
            "[{t: 0, from: server, event: &r {type: a, self: *r}}]}}}]")
    with pytest.raises(CassetteError, match="contains it"):
        loads(text)
