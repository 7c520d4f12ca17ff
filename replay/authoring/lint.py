"""Lint a cassette: replay its client frames through the engine beside its server frames.

Two kinds of finding: a rule that would refuse a recorded client frame the real server accepted
(or accepted one it refused), and server frames that contradict each other (a delta for an item
never announced, a second active response, ...). Client frames whose fields were elided by the
capture are checked for server-side consistency only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replay.cassettes.cassette import Cassette, WebSocketSession
from replay.engine.conversation import Conversation
from replay.engine.script import script_of
from replay.text import clip, visible


@dataclass(frozen=True)
class Finding:
    cassette: str
    session: int
    frame: int | None
    kind: str  # "rule" | "unexplained-error" | "consistency"
    message: str

    def __str__(self) -> str:
        """One line, every recorded character in it made visible (codes and messages come from the cassette)."""
        where = f"{self.cassette} session {self.session}" + (f" frame #{self.frame}" if self.frame is not None else "")
        return visible(f"{where}: [{self.kind}] {clip(self.message)}")


def lint_cassette(cassette: Cassette) -> list[Finding]:
    """Findings for every session; a frame replay could not use at all is a `CassetteError` first."""
    elided = bool(cassette.metadata.get("client_frames_elided"))
    findings: list[Finding] = []
    for index, session in enumerate(cassette.sessions):
        script_of(cassette, index)
        findings += lint_session(session, name=cassette.name, index=index, elided=elided)
    return findings


def _key(error: dict[str, Any]) -> tuple[Any, Any]:
    inner = error.get("error")
    return (inner.get("code"), inner.get("message")) if isinstance(inner, dict) else (None, None)


def lint_session(session: WebSocketSession, *, name: str = "cassette", index: int = 0,
                 elided: bool = False) -> list[Finding]:
    engine = Conversation(session.dialect, model=session.model)
    predicted: list[tuple[int, str, dict[str, Any]]] = []
    recorded: list[tuple[int, dict[str, Any]]] = []
    for position, frame in enumerate(session.frames):
        if frame.source == "client":
            if frame.event is None:
                received = engine.receive_client(frame.binary if frame.binary is not None else frame.text or "")
            elif elided and list(frame.event) == ["type"]:
                continue  # only the type survived the capture: nothing to validate
            else:
                received = engine.receive_event(frame.event)
            if received.rule is not None:
                predicted.append((position, received.rule, received.reactions[0]))
        elif frame.event is not None:
            if frame.type == "error":
                recorded.append((position, frame.event))
            engine.send_server(frame.event)
    findings: list[Finding] = []
    unmatched = list(recorded)
    for position, rule, error in predicted:
        match = next((r for r in unmatched if _key(r[1]) == _key(error)), None)
        if match is not None:
            unmatched.remove(match)
            continue
        code, message = _key(error)
        findings.append(Finding(name, index, position, "rule",
                                f"rule {rule} refuses this {session.frames[position].type or 'frame'} "
                                f"({code}: {message}) but the recorded server did not"))
    for position, error in unmatched:
        code, message = _key(error)
        findings.append(Finding(name, index, position, "unexplained-error",
                                f"recorded server error the rules would not have produced: {code}: {message}"))
    findings += [Finding(name, index, None, "consistency", note) for note in engine.notes]
    return findings
