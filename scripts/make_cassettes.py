"""Regenerate the bundled cassettes and their README.

    python scripts/make_cassettes.py                 # write cassettes/ (synthesized + imported)
    python scripts/make_cassettes.py --out DIR       # write somewhere else
    python scripts/make_cassettes.py --check         # exit 1 if cassettes/ is not what this writes

Synthesized cassettes come from `replay.authoring.synth` (deterministic: fixed seeds, clock and ids). Imported
ones come from the genuine MIT-licensed traces in ../shared/traces/real (`--traces DIR`); traces
without a licence that allows redistribution are skipped. Every cassette is checked before it is
written: vcrpy's own deserializer, `replay.cassettes.cassette.load`, and the conversation engine fed frame by
frame (no rule may fire except where the recording itself shows the server's `error`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vcr.serialize import deserialize  # noqa: E402
from vcr.serializers import yamlserializer  # noqa: E402

from replay.authoring.importer import import_trace  # noqa: E402
from replay.authoring.synth import build_all, check_with_engine  # noqa: E402
from replay.cassettes.cassette import AUDIO_FIELD, Cassette, load  # noqa: E402
from replay.files import write_atomic  # noqa: E402
from replay.wire.protocol import BYTES_PER_MS  # noqa: E402

DEFAULT_TRACES = REPO.parent / "shared" / "traces" / "real"
REDISTRIBUTABLE = ("MIT",)

# What each genuine trace shows (from shared/traces/real/README.md), for the cassettes README.
REAL_DESCRIPTIONS = {
    "pydantic_openai_ga_text_in_audio_out": "The smallest real GA turn: a text item, then an audio response "
                                            "(4 audio deltas, transcript deltas with obfuscation).",
    "pydantic_openai_ga_server_vad_audio_turn": "Real GA server-VAD turn: 55 microphone appends, "
                                                "speech_started/stopped, committed, input transcription "
                                                "deltas, an automatic audio response.",
    "pydantic_openai_ga_three_server_vad_turns": "Three consecutive real server-VAD turns, each answered "
                                                 "with audio, continuous microphone audio between them.",
    "pydantic_openai_ga_tool_call_round": "Real GA function call (argument deltas), the client's "
                                          "function_call_output + response.create, then a text answer.",
    "pydantic_openai_ga_realtime21_text_tool_round": "Tool round on gpt-realtime-2.1: one response holds a "
                                                     "`phase: commentary` message and the function call; the "
                                                     "answer is `phase: final_answer`.",
    "pydantic_openai_ga_history_seeding_error": "A genuine `error`: an assistant item with content type "
                                                "`text` is refused (invalid_value) before the acks of the "
                                                "earlier user item; the chain skips it.",
    "pydantic_azure_ga_transcription_failed": "Azure OpenAI server-VAD turn whose input transcription fails "
                                              "(DeploymentNotFound); the response still completes.",
    "liusida_ws_beta_text_only_response": "Beta server events for one text-only response (77 text deltas); "
                                          "no client frames, no session.created.",
}


def audio_ms(cassette: Cassette) -> int:
    """Model output audio in the cassette, in ms (pcm16 unless the session says otherwise)."""
    total = 0.0
    for session in cassette.sessions:
        for frame in session.frames:
            event = frame.event or {}
            if frame.source != "server" or event.get("type") not in AUDIO_FIELD or "delta" not in event:
                continue
            payload = event["delta"]
            if isinstance(payload, dict):
                nbytes = int(payload.get("$audio", {}).get("bytes", 0))
            else:
                try:
                    nbytes = len(base64.b64decode(str(payload)))
                except (binascii.Error, ValueError):
                    nbytes = 0
            total += nbytes / BYTES_PER_MS["pcm16"]
    return round(total)


def verify(name: str, text: str) -> list[str]:
    """Problems with one cassette's text; empty when vcrpy, our loader and the engine all accept it."""
    problems = []
    try:
        deserialize(text, yamlserializer)
    except Exception as exc:  # any failure here is a broken cassette
        problems.append(f"{name}: vcrpy cannot read it: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        cassette = load(path)
    for session in cassette.sessions:
        check = check_with_engine(session)
        recorded = [code for _, code in check.recorded_errors]
        unexplained = [f for f in check.fired if f[3] not in recorded]
        problems += [f"{name}: frame {i} ({etype}) fires {rule} ({code}) with no recorded error"
                     for i, etype, rule, code in unexplained]
        problems += [f"{name}: engine note: {note}" for note in check.notes]
    return problems


def build(traces: Path | None) -> dict[str, Cassette]:
    cassettes = dict(build_all())
    if traces is not None and traces.is_dir():
        for trace in sorted(traces.glob("*.jsonl")):
            cassette = import_trace(trace)
            if cassette.metadata.get("license") not in REDISTRIBUTABLE:
                print(f"skip {trace.name}: licence {cassette.metadata.get('license')!r} does not allow bundling",
                      file=sys.stderr)
                continue
            description = REAL_DESCRIPTIONS.get(trace.stem)
            if description:
                cassette.metadata["description"] = description
            cassettes[f"real_{trace.stem}"] = cassette
    elif traces is not None:
        print(f"note: {traces} not found; imported cassettes not regenerated", file=sys.stderr)
    return cassettes


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def readme(cassettes: dict[str, Cassette]) -> str:
    rows = []
    for name, cassette in sorted(cassettes.items(), key=lambda kv: (kv[0].startswith("real_"), kv[0])):
        meta = cassette.metadata
        dialect = cassette.sessions[0].dialect if cassette.sessions else "?"
        ms = audio_ms(cassette)
        audio = f"{ms} ms" if not meta.get("audio_truncated_at_source") else \
            f"{ms} ms (payloads cut to {meta.get('audio_payload_bytes', '?')} B at source)"
        source = meta.get("source", "")
        if meta.get("origin") == "imported" and meta.get("source_repo"):
            commit = str(meta.get("source_commit", ""))[:12]
            source = f"{meta['source_repo']} `{meta.get('source_path', '')}` @ {commit}"
        rows.append(f"| `{name}.yaml` | {meta.get('origin')} | {dialect} | {meta.get('frames')} | {audio} | "
                    f"{_cell(meta.get('description', ''))} | {_cell(source)} | {meta.get('license')} |")
    table = "\n".join(rows)
    return f"""# Bundled cassettes

Generated by `python scripts/make_cassettes.py`; do not edit by hand (the script rewrites this file).

Each file is a vcrpy cassette (`version: 1`, `interactions:`) whose WebSocket session is one
interaction: the upgrade request, and a `101` response carrying `websocket: {{dialect, frames, close}}`.
Frames are `{{t, from, event}}` with `t` in seconds since the socket opened. The top-level `metadata`
says where a cassette came from (`origin`, `source`, `license`, `model`, `recorded_at`, `tool`).

| cassette | origin | dialect | frames | model audio | what it shows | source | license |
|---|---|---|---|---|---|---|---|
{table}

## Synthesized cassettes

Built by `replay/authoring/synth.py` from the protocol reference (`realtime-protocol.md` §5 objects, §8 event
orders, §7 audio arithmetic): fixed seeds, ids from `IdFactory(seed)`, a fixed clock and
`recorded_at`, so regenerating them gives byte-identical files. Timing follows the captured latencies
(`response.created` ~280 ms and the first delta ~476 ms after `response.create`; audio produced about
2.5x faster than real time). Audio is compacted to `{{"$audio": {{"bytes": N, "sha256": ...}}}}`: replay
sends exactly N zero bytes, so `audio_end_ms` arithmetic holds (100 ms of pcm16 = 4800 bytes).
Where a genuine capture showed more than the reference, the capture was followed: a model item's
`conversation.item.done` has `previous_item_id: null` when it follows the conversation's first item,
and beta `rate_limits.updated` comes right after `response.created`.

## Imported (real) cassettes

Converted with `replay.authoring.importer.import_trace` from the genuine traces in `shared/traces/real`
(MIT-licensed ones only; the banyan WebRTC logs have no licence and are not bundled). Events are kept
as captured. The captures had no timestamps, so frames are 5 ms apart (`metadata.timing:
synthesized`). pydantic-ai's recorder cut every audio payload to 44 base64 characters (33 bytes)
before committing, marked `audio_truncated_at_source: true`: a delta there is ~0.7 ms of audio, so
barge-in and truncate tests that depend on how much audio was produced should use the synthesized
cassettes. `recorded_at` is derived from `session.created`'s `expires_at` (sessions last 60 minutes).

## Regenerating

    python scripts/make_cassettes.py            # all of the above, checked, into cassettes/
    python scripts/make_cassettes.py --check    # fail if cassettes/ differs from what it would write

To import another capture (JSON Lines event log, or a pydantic-ai websocket cassette):

    rtreplay import TRACE -o CASSETTE

## A cassette is untrusted input

A shared cassette may have been written by anyone, so every command loads it within bounds and
answers anything else with one line naming the file (and the frame path, e.g.
`interactions[3].response.websocket.frames[17].event.item.content`) and exit 2, never a traceback:
only regular files of at most 256 MiB are read (a FIFO or a device is named and refused); YAML
aliases stay shared objects and may add at most 1,000,000 nodes when expanded (a billion-laughs file
is refused in milliseconds), nesting is at most 100 levels, and a node that contains itself is
refused; a compacted `{{"$audio": {{"bytes": N}}}}` is a whole number from 0 to 172,800,000 (60 minutes
of pcm16 at 48 bytes/ms), and so is a session's total; every field the replay reads is type-checked
when the cassette is compiled; event types may not hold control characters. What `show`, `lint` and
`import` print from a cassette is shown as text, with control characters as escapes, never as
terminal sequences or markup. `tests/hostile/test_cassette_fuzz.py` runs a single-field mutation of
every bundled cassette through load, compile, `show`, `check --list` and `serve`.

The per-user cache (`$XDG_CACHE_HOME/rtreplay`, else `~/.cache/rtreplay`) is used only when it is a
real directory owned by you and writable by nobody else (a planted symlink is refused; entries are
opened without following links); an empty or root `HOME` means no cache, and an entry that does not
read back as the loader wrote it is a miss.
"""


def render(cassettes: dict[str, Cassette]) -> dict[str, str]:
    files = {f"{name}.yaml": cassette.dumps() for name, cassette in cassettes.items()}
    files["README.md"] = readme(cassettes)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "cassettes", help="directory to write (cassettes/)")
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="genuine JSONL traces to import")
    parser.add_argument("--no-import", action="store_true", help="only the synthesized cassettes")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out differs")
    args = parser.parse_args(argv)

    cassettes = build(None if args.no_import else args.traces)
    files = render(cassettes)
    problems = [p for name, text in files.items() if name.endswith(".yaml") for p in verify(name[:-5], text)]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out / name).is_file() or (args.out / name).read_text(encoding="utf-8") != text]
        for name in stale:
            print(f"stale: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    for name, text in files.items():
        write_atomic(args.out / name, text)
        (args.out / name).chmod(0o644)  # mkstemp makes 0600; cassettes are meant to be read by anyone
    summary = {name: {"frames": c.metadata.get("frames"), "dialect": c.sessions[0].dialect,
                      "audio_ms": audio_ms(c)} for name, c in cassettes.items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
