"""What `show`, `lint` and `import` print of a cassette is data: a recorded ``[link=...]`` stays those
characters, an ESC shows as ``\\x1b``, and nothing a cassette says drives the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

ESC_CLEAR = "\x1b[2J\x1b[H"
LINK = "[link=https://evil.example]click[/link]"
OSC8 = "\x1b]8;;https://evil.example\x1b\\x\x1b]8;;\x1b\\"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def hostile_cassette(tmp_path: Path) -> Path:
    text = json.dumps({  # JSON is YAML: every string exactly as written
        "version": 1,
        "metadata": {"origin": LINK, "source": ESC_CLEAR + "src", "license": OSC8},
        "interactions": [
            {"request": {"uri": f"ws://x/v1/realtime?model={LINK}{ESC_CLEAR}", "method": "GET"},
             "response": {"status": {"code": 101}, "websocket": {"dialect": "ga", "frames": [
                 {"t": 0, "from": "server", "event": {"type": "session.created", "session": {}}},
                 {"t": 0.1, "from": "server", "event": {"type": "error", "error": {
                     "code": LINK, "message": ESC_CLEAR + "boom" + OSC8}}},
                 {"t": 0.2, "from": "client", "text": LINK + ESC_CLEAR},
                 {"t": 0.3, "from": "server", "event": {"type": "response.output_item.added", "response_id": "r",
                                                        "item": {"id": LINK, "type": "message", "role": ESC_CLEAR}}},
             ], "close": {"code": 1000, "reason": LINK + ESC_CLEAR, "by": "server"}}}},
            {"request": {"uri": "https://x/v1/" + LINK + ESC_CLEAR, "method": "POST" + ESC_CLEAR},
             "response": {"status": {"code": 200}}},
        ],
    })
    path = tmp_path / f"hostile{ESC_CLEAR}.yaml"  # the file's own name too
    path.write_text(text, encoding="utf-8")
    return path


def test_show_prints_recorded_markup_and_escapes_as_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["show", str(hostile_cassette(tmp_path))], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u009b" not in result.output
    assert result.output.count(LINK) >= 4  # origin, model, item id, error code, close reason, HTTP line: literally
    assert "hostile\\x1b[2J\\x1b[H" in result.output  # the file's name
    assert "\\x1b[2J" in result.output and "license=\\x1b]8;;https://evil.example" in result.output


def test_lint_findings_say_recorded_text_as_escapes(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["lint", str(hostile_cassette(tmp_path))], terminal_width=400)
    assert result.exit_code == 1, result.output  # the recorded error nothing explains is a finding
    assert "unexplained-error" in result.output and "\x1b" not in result.output
    assert LINK in result.output and "\\x1b[2J\\x1b[Hboom" in result.output


@pytest.mark.parametrize(("event", "expected"), [
    ({"type": "response.output_item.added", "item": {"id": ["x", ESC_CLEAR + LINK]}},
     "event.item.id: must be a string"),
    ({"type": "response.done" + ESC_CLEAR}, "event.type: must be an event name"),
])
def test_an_error_naming_a_frame_says_its_text_as_escapes(tmp_path: Path, event: dict[str, object],
                                                          expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"version": 1, "interactions": [
        {"request": {"uri": "ws://x", "method": "GET"}, "response": {"status": {"code": 101}, "websocket": {
            "dialect": "ga", "frames": [{"t": 0, "from": "server", "event": event}]}}}]}), encoding="utf-8")
    for command in (["show"], ["lint"], ["check", "--list", "--cassette"], ["serve", "--port", "0"]):
        result = CliRunner().invoke(app, [*command, str(path)], terminal_width=400)
        assert result.exit_code == 2, result.output
        assert f"interactions[0].response.websocket.frames[0].{expected}" in result.output
        assert "\x1b" not in result.output and "Traceback" not in result.output


def trace(tmp_path: Path, meta: dict[str, object]) -> Path:
    path = tmp_path / "trace.jsonl"
    lines = [{"_meta": meta}, {"type": "session.created", "session": {"model": "gpt-realtime"}},
             {"type": "response.create"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def test_import_says_license_unknown_never_none(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", str(trace(tmp_path, {})), "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 0, result.output
    assert "license unknown" in result.output and "None" not in result.output


def test_import_says_a_recorded_license_as_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", str(trace(tmp_path, {"license": LINK + ESC_CLEAR})),
                                      "-o", str(tmp_path / "out.yaml")], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert f"license {LINK}\\x1b[2J" in result.output and "\x1b" not in result.output


def test_import_checks_its_output_before_reading_the_trace(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["import", str(tmp_path / "no-such-trace.jsonl"),
                                      "-o", str(blocker / "out.yaml")], terminal_width=400)
    assert result.exit_code == 2
    assert f"-o {blocker / 'out.yaml'}: {blocker} is not a directory" in result.output
    assert "no such" not in result.output  # the trace was never read


def test_import_names_the_users_path_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import replay.files

    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device", str(path.parent / ".out.yaml.abc123.tmp"))

    monkeypatch.setattr(replay.files, "write_atomic", full)
    monkeypatch.setattr("replay.cassettes.cassette.write_atomic", full)
    out = tmp_path / "out.yaml"
    result = CliRunner().invoke(app, ["import", str(trace(tmp_path, {})), "-o", str(out)], terminal_width=400)
    assert result.exit_code == 2
    assert f"-o {out}: cannot write the cassette: No space left on device" in result.output
    assert ".tmp" not in result.output
