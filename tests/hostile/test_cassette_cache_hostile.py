"""The parsed-cassette cache against a hostile file system: a planted symlink is never followed, an
empty HOME never means a directory at the root, and an entry of the wrong shape is a miss."""

from __future__ import annotations

import marshal
import os
import zlib
from pathlib import Path

import pytest

from replay.cassettes import cache as cassette_cache
from replay.cassettes.cassette import _CACHE, CassetteError, load, loads
from replay.engine.script import script_of

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "cassettes" / "ga_text_turn_audio_response.yaml"


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.cassette")) if directory.is_dir() else []


def test_a_symlink_planted_as_the_cache_directory_is_not_followed(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    target = tmp_path / "victim"  # a directory of the user's that the planter wants entries written into
    target.mkdir(mode=0o700)
    (shared / "rtreplay").symlink_to(target)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    assert load(GOOD) == load(GOOD)
    assert list(target.iterdir()) == []


def test_an_entry_planted_as_a_symlink_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected = load(GOOD)
    [entry] = entries(tmp_path / "rtreplay")
    entry.unlink()
    entry.symlink_to("/dev/zero")
    assert load(GOOD) == expected  # at once: neither followed nor read


@pytest.mark.parametrize("home", ["", "/", "relative/home"])
def test_no_usable_home_means_no_cache_never_one_at_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             home: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", home)
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    existed = os.path.exists("/.cache/rtreplay")
    before = {p.name for p in entries(Path("/.cache/rtreplay"))}
    assert load(GOOD).sessions
    assert os.path.exists("/.cache/rtreplay") == existed
    assert {p.name for p in entries(Path("/.cache/rtreplay"))} == before
    assert list(tmp_path.iterdir()) == []


def plant(directory: Path, raw: bytes, payload: object) -> None:
    """An entry with the right key, length and CRC-32 for ``raw``, holding ``payload``."""
    key = _CACHE.key(raw)
    data = marshal.dumps(payload)
    blob = cassette_cache.MAGIC + cassette_cache._HEADER.pack(key, len(data), zlib.crc32(data)) + data
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / (key.hex() + cassette_cache.SUFFIX)).write_bytes(blob)


URI = "ws://x/v1/realtime?model=m"


@pytest.mark.parametrize("payload", [
    None, 5, (), ({}, [], "extra"), ({}, [("only", "three", "fields")]),
    ({}, [(URI, "ga", [0.0], ["server"], [["not", "a", "mapping"]], [None], [None], {}, {}, None)]),
    ({}, [(URI, "ga", [0.0], ["nobody"], [{"type": "x"}], [None], [None], {}, {}, None)]),
    ({}, [(URI, "ga", ["soon"], ["server"], [{"type": "x"}], [None], [None], {}, {}, None)]),
    ({}, [(URI, "v9", [0.0], ["server"], [{"type": "x"}], [None], [None], {}, {}, None)]),
    ({}, [(URI, "ga", [0.0], ["server"], [{"type": "x"}], [None], [None], [], {}, None)]),
    ({}, [(42, "ga", [0.0], ["server"], [{"type": "x"}], [None], [None], {}, {}, None)]),
    ({}, [(URI, "ga", [0.0], ["server"], [{"type": "x"}], [None], [None], {}, {}, "closed")]),
    ({}, ["not an interaction"]),
    ([], []),
])
def test_an_entry_of_the_wrong_shape_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               payload: object) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    raw = GOOD.read_bytes()
    plant(tmp_path / "rtreplay", raw, payload)
    assert load(GOOD) == loads(raw.decode(), GOOD)


@pytest.mark.parametrize("event", [{"type": 7}, {"no": "type"}, None,
                                   {"type": "response.output_audio.delta", "delta": {"$audio": {"bytes": 10**12}}}])
def test_an_entry_with_events_no_load_makes_is_refused_when_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     event: dict[str, object] | None) -> None:
    """Inside the events the entry is checked where the session is compiled, as a parse is: one clear error."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    raw = GOOD.read_bytes()
    plant(tmp_path / "rtreplay", raw, ({}, [(URI, "ga", [0.0], ["server"], [event], [None], [None], {}, {}, None)]))
    with pytest.raises(CassetteError, match=r"interactions\[0\].response.websocket.frames\[0\]"):
        script_of(load(GOOD), 0)


@pytest.mark.parametrize("data", [b"[\x05\x00\x00\x00i\x01\x00\x00\x00", b"\xff", b"(\x01\x00\x00\x00\xfe"],
                         ids=["a list that ends early", "an unknown type code", "a tuple of one unknown item"])
def test_an_entry_marshal_cannot_read_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    raw = GOOD.read_bytes()
    key = _CACHE.key(raw)
    blob = cassette_cache.MAGIC + cassette_cache._HEADER.pack(key, len(data), zlib.crc32(data)) + data
    (tmp_path / "rtreplay").mkdir(mode=0o700)
    (tmp_path / "rtreplay" / (key.hex() + cassette_cache.SUFFIX)).write_bytes(blob)
    assert load(GOOD) == loads(raw.decode(), GOOD)


def test_an_alias_stays_one_object_in_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry of a cassette with aliases holds each aliased node once, as the parse does."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    anchors = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] +
                        [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 5)])
    path = tmp_path / "shared.yaml"
    path.write_text(f"version: 1\n{anchors}\ninteractions: [{{request: {{uri: '{URI}', method: GET}}, response: "
                    "{status: {code: 101}, websocket: {dialect: ga, frames: [{t: 0, from: server, "
                    "event: {type: x, a: *a4, b: *a4}}]}}}]\n", encoding="utf-8")
    first = load(path)
    [entry] = entries(tmp_path / "rtreplay")
    assert entry.stat().st_size < 4096  # 9**4 leaves once, not 2 * 9**4 * their path
    again = load(path).sessions[0].frames[0].event
    assert again is not None and again["a"] is again["b"] and again == first.sessions[0].frames[0].event
