"""A shared cassette is untrusted input: whatever the file holds, loading it is bounded in time and
memory, and every command ends with one line naming the file and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from replay.cassettes.cassette import MAX_ALIAS_NODES, MAX_AUDIO_BYTES, CassetteError, load, loads

ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 1 << 30  # address space of each command: a billion laughs needs tens of GB
TIME_LIMIT = 120  # seconds; a bounded load takes well under one


def session_yaml(event: str = "{type: x}", *, head: str = "") -> str:
    return (f"version: 1\n{head}interactions: [{{request: {{uri: 'ws://x/v1/realtime?model=m', method: GET}}, "
            f"response: {{status: {{code: 101}}, websocket: {{dialect: ga, frames: "
            f"[{{t: 0, from: server, event: {event}}}]}}}}}}]\n")


def billion_laughs() -> str:
    """Some 700 bytes that PyYAML composes into a few dozen nodes, and that expand to 9**9 = 387 million."""
    anchors = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    anchors += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return session_yaml("{type: response.created, response: {id: r, metadata: {bomb: *a8}}}",
                        head="\n".join(anchors) + "\n")


def merge_key_bomb() -> str:
    """The same through merge keys, which PyYAML's own construction flattens (the loader's fallback path)."""
    anchors = ["m0: &m0 {k0: x, k1: x, k2: x}"]
    anchors += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + f"], k{i}: y}}" for i in range(1, 10)]
    return session_yaml("{type: x, bomb: *m9}", head="\n".join(anchors) + "\n")


def alias_chain(levels: int) -> str:
    """Each anchor one level deeper than the last: small as written, nested ``levels`` deep when walked."""
    anchors = ["c0: &c0 [x]"] + [f"c{i}: &c{i} [*c{i - 1}]" for i in range(1, levels)]
    return session_yaml(f"{{type: x, deep: *c{levels - 1}}}", head="\n".join(anchors) + "\n")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command in a child capped at MEMORY_LIMIT of address space and TIME_LIMIT seconds."""
    limit = textwrap.dedent(f"""
        import resource, runpy, sys
        resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
        sys.argv = ["cli.py", *sys.argv[1:]]
        runpy.run_path("cli.py", run_name="__main__")
    """)
    return subprocess.run([sys.executable, "-c", limit, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIME_LIMIT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          check=False)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], path: Path, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and all(w in lines[0] for w in words), lines[0]


@pytest.mark.parametrize("command", [["show"], ["check", "--list", "--cassette"], ["lint"], ["lint", "--secrets"],
                                     ["serve", "--port", "0"]])
def test_a_billion_laughs_is_refused_by_every_command_in_bounded_memory(tmp_path: Path, command: list[str]) -> None:
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(billion_laughs(), encoding="utf-8")
    assert bomb.stat().st_size < 1024
    result = run_cli(*command, str(bomb), env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_one_clear_line(result, bomb, "aliases expand to more than", f"{MAX_ALIAS_NODES:,}")


def test_the_bomb_is_refused_with_the_cache_off_too(tmp_path: Path) -> None:
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(billion_laughs(), encoding="utf-8")
    result = run_cli("show", str(bomb), env={"XDG_CACHE_HOME": "", "HOME": ""})
    assert_one_clear_line(result, bomb, "refused")


@pytest.mark.parametrize(("text", "words"), [
    (merge_key_bomb(), "aliases expand to more than"),
    (alias_chain(5000), "nested more than 100 levels deep"),
    (session_yaml("&r {type: x, self: *r}"), "contains it"),
    (session_yaml("{type: x, deep: " + "[" * 150 + "]" * 150 + "}"), "nested more than 100 levels deep"),
])
def test_other_unbounded_shapes_are_refused_by_the_loader(text: str, words: str) -> None:
    with pytest.raises(CassetteError) as info:
        loads(text, "hostile.yaml")
    assert str(info.value).startswith("hostile.yaml: refused: ") and words in str(info.value)


def test_aliases_within_the_budget_still_load_as_one_shared_object() -> None:
    loaded = loads(session_yaml("{type: x, a: &s {k: [1, 2]}, b: *s}")).sessions[0].frames[0].event
    assert loaded is not None and loaded["a"] is loaded["b"] == {"k": [1, 2]}


# ---------------------------------------------------------------------------- not a regular file


def test_a_fifo_is_refused_at_once_not_read_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    result = run_cli("show", str(fifo), env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_one_clear_line(result, fifo, "not a regular file (a FIFO)")


@pytest.mark.parametrize("command", [["show"], ["check", "--list", "--cassette"], ["lint"]])
def test_dev_zero_is_refused_before_a_byte_is_read(tmp_path: Path, command: list[str]) -> None:
    result = run_cli(*command, "/dev/zero", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_one_clear_line(result, Path("/dev/zero"), "not a regular file (a character device)")


def test_a_file_larger_than_the_bound_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "huge.yaml"
    with big.open("wb") as fh:  # sparse: nothing is written, the size is what is checked
        fh.truncate(300 * 1024 * 1024)
    with pytest.raises(CassetteError, match=r"huge.yaml: 314572800 bytes, more than the 256 MiB"):
        load(big)


def test_a_directory_is_named_as_one(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match="is a directory, not a cassette"):
        load(tmp_path)


# ---------------------------------------------------------------------------- compacted audio


@pytest.mark.parametrize(("size", "shown"), [(-5, "-5"), (10**12, "1000000000000"), (2.5, "2.5"), (True, "True"),
                                             ("12", "'12'"), (None, "None"), (MAX_AUDIO_BYTES + 1, "172800001")])
def test_compacted_audio_sizes_are_bounded_at_load(size: object, shown: str) -> None:
    event = f"{{type: response.output_audio.delta, item_id: i, delta: {{$audio: {{bytes: {yaml_value(size)}}}}}}}"
    with pytest.raises(CassetteError) as info:
        loads(session_yaml(event), "audio.yaml")
    message = str(info.value)
    assert message.startswith("audio.yaml: interactions[0].response.websocket.frames[0].event.delta.$audio.bytes")
    assert "from 0 to 172,800,000" in message and "60 minutes of pcm16" in message and shown in message


def test_compacted_audio_adds_up_to_the_bound_per_session() -> None:
    half = MAX_AUDIO_BYTES // 2 + 1
    frames = ", ".join(f"{{t: 0, from: server, event: {{type: response.output_audio.delta, delta: "
                       f"{{$audio: {{bytes: {half}}}}}}}}}" for _ in range(2))
    text = session_yaml("{type: x}").replace("[{t: 0, from: server, event: {type: x}}]", f"[{frames}]")
    with pytest.raises(CassetteError, match=r"frames\[1\].event.delta: the session's compacted audio comes to more"):
        loads(text, "two.yaml")


@pytest.mark.parametrize("payload", ["[1, 2]", "7", "{bytes: 5}", "{$audio: 5}"])
def test_an_audio_payload_is_base64_or_compacted(payload: str) -> None:
    with pytest.raises(CassetteError, match=r"event.audio: must be base64 audio or a compacted"):
        loads(session_yaml(f"{{type: input_audio_buffer.append, audio: {payload}}}"), "append.yaml")


def yaml_value(value: object) -> str:
    return "true" if value is True else "null" if value is None else repr(value)


# ---------------------------------------------------------------------------- import


def test_import_reads_a_yaml_capture_within_the_same_bounds(tmp_path: Path) -> None:
    capture = tmp_path / "capture.yaml"
    capture.write_text(billion_laughs().replace("interactions: [{request:", "other: [{request:")
                       + "interactions: [{kind: message, direction: received, data: {type: x, bomb: *a8}}]\n",
                       encoding="utf-8")
    result = run_cli("import", str(capture), "-o", str(tmp_path / "out.yaml"))
    assert_one_clear_line(result, capture, "refused", "aliases expand to more than")
    assert not (tmp_path / "out.yaml").exists()


def test_import_refuses_an_event_nested_deeper_than_a_cassette_may_be(tmp_path: Path) -> None:
    capture = tmp_path / "deep.jsonl"
    capture.write_text('{"type": "session.created", "session": {"x": ' + "[" * 95 + "]" * 95 + "}}\n",
                       encoding="utf-8")
    result = run_cli("import", str(capture), "-o", str(tmp_path / "out.yaml"))
    assert_one_clear_line(result, capture, "deep.jsonl:1: session.created: the event is nested more than 90 levels")


def test_import_refuses_a_number_python_will_not_convert(tmp_path: Path) -> None:
    capture = tmp_path / "digits.jsonl"
    capture.write_text('{"type": "x", "n": ' + "9" * 5000 + "}\n", encoding="utf-8")
    result = run_cli("import", str(capture), "-o", str(tmp_path / "out.yaml"))
    assert_one_clear_line(result, capture, "digits.jsonl:1: not valid JSON")
