"""Secrets out of cassettes: API keys, ephemeral client secrets, cookies.

Cassettes are meant to be committed and shared, so everything the recorder writes goes through
`scrub_cassette`, and `rtreplay lint --secrets` runs `find_secrets` over cassettes from anywhere.
Both walk the same places with the same detectors, so a scrubbed cassette has no findings.

Detectors: credential headers (``Authorization``, ``api-key``, ``Cookie``, ``Set-Cookie``); the key
carried in an ``openai-insecure-api-key.<key>`` subprotocol; ``client_secret.value`` and the
``value`` of an ephemeral-key response (``{value, expires_at, ...}``) in JSON bodies and events;
strings shaped like OpenAI keys (``sk-``/``sk-proj-`` and ``ek_`` followed by at least 16 of
``[A-Za-z0-9_-]``); and given literal values (``$OPENAI_API_KEY`` always) wherever they appear.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from replay.cassettes.cassette import Cassette, Frame, WebSocketSession

REDACTED = "REDACTED"
SECRET_HEADERS = frozenset({"authorization", "api-key", "cookie", "set-cookie"})
AUTH_SCHEMES = frozenset({"bearer", "basic"})
# Shorter literal values would match ordinary text all over the cassette and wreck it.
MIN_VALUE_LENGTH = 8

_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("OpenAI API key", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}")),
    ("ephemeral key", re.compile(r"(?<![A-Za-z0-9])ek_[A-Za-z0-9_-]{16,}")),
    ("key in an openai-insecure-api-key subprotocol",
     re.compile(r"(?<=openai-insecure-api-key\.)(?!REDACTED(?:[\s,;\"']|$))[^\s,;\"']+")),
)


def scrub_cassette(cassette: Cassette, *, extra_values: Sequence[str] = ()) -> Cassette:
    """A copy of the cassette with every secret replaced by ``REDACTED``; the input is left as is."""
    return _walk_cassette(cassette, _Scan(_values(extra_values), redact=True))


def find_secrets(cassette: Cassette, *, extra_values: Sequence[str] = ()) -> list[str]:
    """Where the cassette holds something secret, and what kind; the secret itself only masked."""
    scan = _Scan(_values(extra_values), redact=False)
    _walk_cassette(cassette, scan)
    return scan.hits


def mask(secret: str) -> str:
    """Enough to recognise a key (``sk-...abcd``, as OpenAI's own errors show it), never the key."""
    return f"{secret[:3]}...{secret[-4:]}" if len(secret) >= 16 else "****"


def _values(extra_values: Iterable[str]) -> list[tuple[str, str]]:
    values = [("given secret value", value) for value in extra_values]
    env_key = os.environ.get("OPENAI_API_KEY")
    if env_key:
        values.insert(0, ("value of $OPENAI_API_KEY", env_key))
    return values


def _ephemeral_values(obj: Any) -> list[tuple[str, str]]:
    """``client_secret.value`` anywhere, and the top-level ``value`` of a client_secrets response."""
    found: list[tuple[str, str]] = []
    if isinstance(obj, dict) and isinstance(obj.get("value"), str) and "expires_at" in obj:
        found.append(("ephemeral key (value)", obj["value"]))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            secret = node.get("client_secret")
            if isinstance(secret, dict) and isinstance(secret.get("value"), str):
                found.append(("ephemeral key (client_secret.value)", secret["value"]))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(obj)
    return [(kind, value) for kind, value in found if value and value != REDACTED]


class _Scan:
    """One pass over a cassette: either collects hits or returns redacted copies (never both)."""

    def __init__(self, values: Iterable[tuple[str, str]], *, redact: bool) -> None:
        self.values = [(kind, v) for kind, v in values if len(v) >= MIN_VALUE_LENGTH and v != REDACTED]
        self.redact = redact
        self.hits: list[str] = []

    def _hit(self, where: str, kind: str, secret: str) -> None:
        self.hits.append(f"{where}: {kind} {mask(secret)}")

    def text(self, text: str, where: str, literals: Sequence[tuple[str, str]] = ()) -> str:
        spans: list[tuple[int, int, str]] = []
        for kind, pattern in _SHAPES:
            spans += [(m.start(), m.end(), kind) for m in pattern.finditer(text)]
        for kind, value in [*self.values, *literals]:
            start = text.find(value)
            while start != -1:
                spans.append((start, start + len(value), kind))
                start = text.find(value, start + len(value))
        if not spans:
            return text
        merged: list[tuple[int, int, str]] = []
        for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
            if merged and start < merged[-1][1]:
                last = merged[-1]
                merged[-1] = (last[0], max(last[1], end), last[2])
            else:
                merged.append((start, end, kind))
        for start, end, kind in merged:
            self._hit(where, kind, text[start:end])
        if not self.redact:
            return text
        out, at = [], 0
        for start, end, _ in merged:
            out += [text[at:start], REDACTED]
            at = end
        return "".join([*out, text[at:]])

    def whole(self, value: str, where: str, kind: str) -> str:
        """A value that is secret in full wherever it sits (a header credential)."""
        if not value or value == REDACTED:
            return value
        self._hit(where, kind, value)
        return REDACTED if self.redact else value

    def raw(self, data: bytes, where: str) -> bytes:
        # latin-1 maps bytes to code points one to one, so spans and lengths survive the round trip
        return self.text(data.decode("latin-1"), where).encode("latin-1")

    def body(self, body: str | bytes, where: str) -> str | bytes:
        """An HTTP body or a non-event text frame: JSON-aware, but edited as text to keep its bytes."""
        if isinstance(body, bytes):
            try:
                decoded = body.decode("utf-8")
            except UnicodeDecodeError:
                return self.raw(body, where)
            scanned = str(self.body(decoded, where))
            return body if scanned == decoded else scanned.encode("utf-8")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        return self.text(body, where, _ephemeral_values(parsed))

    def event(self, event: dict[str, Any], where: str) -> dict[str, Any]:
        scanned = self.json(event, where, _ephemeral_values(event))
        assert isinstance(scanned, dict)
        return scanned

    def json(self, node: Any, where: str, literals: Sequence[tuple[str, str]] = ()) -> Any:
        if isinstance(node, str):
            return self.text(node, where, literals)
        if isinstance(node, dict):
            return {k: self.json(v, f"{where}.{k}", literals) for k, v in node.items()}
        if isinstance(node, list):
            return [self.json(v, f"{where}[{i}]", literals) for i, v in enumerate(node)]
        if isinstance(node, bytes):
            return self.raw(node, where)
        return node

    def headers(self, headers: dict[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in headers.items():
            many = values if isinstance(values, list) else [values]
            at = f"{where}.{name}"
            if str(name).lower() in SECRET_HEADERS:
                cleaned = [self._credential(str(name), str(v), at) for v in many]
            else:
                cleaned = [self.json(v, at) for v in many]
            out[name] = cleaned if isinstance(values, list) else cleaned[0]
        return out

    def _credential(self, name: str, value: str, where: str) -> str:
        scheme, space, token = value.partition(" ")
        if name.lower() == "authorization" and space and scheme.lower() in AUTH_SCHEMES:
            return f"{scheme} {self.whole(token.strip(), where, f'{name} header')}"
        return self.whole(value, where, f"{name} header")

    def http(self, node: Any, where: str) -> Any:
        """A vcrpy interaction: headers and bodies get their own rules, everything else is text."""
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            for key, value in node.items():
                at = f"{where}.{key}"
                if key == "headers" and isinstance(value, dict):
                    out[key] = self.headers(value, at)
                elif key in ("body", "string") and isinstance(value, str | bytes):
                    out[key] = self.body(value, at)
                else:
                    out[key] = self.http(value, at)
            return out
        if isinstance(node, list):
            return [self.http(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return self.json(node, where)


def _walk_cassette(cassette: Cassette, scan: _Scan) -> Cassette:
    interactions: list[WebSocketSession | dict[str, Any]] = []
    sessions = 0
    for index, interaction in enumerate(cassette.interactions):
        if isinstance(interaction, WebSocketSession):
            interactions.append(_walk_session(interaction, f"session {sessions}", scan))
            sessions += 1
        else:
            request = interaction.get("request") or {}
            label = f"interaction {index} ({request.get('method')} {urlsplit(str(request.get('uri', ''))).path})"
            interactions.append({key: scan.http(value, f"{label} {key}") for key, value in interaction.items()})
    metadata = scan.json(cassette.metadata, "metadata")
    return Cassette(metadata, interactions, cassette.path)


def _walk_session(session: WebSocketSession, where: str, scan: _Scan) -> WebSocketSession:
    frames: list[Frame] = []
    for index, frame in enumerate(session.frames):
        at = f"{where} frame #{index}"
        if frame.event is not None:
            frames.append(Frame(frame.t, frame.source, event=scan.event(frame.event, f"{at} event")))
        elif frame.binary is not None:
            frames.append(Frame(frame.t, frame.source, binary=scan.raw(frame.binary, f"{at} binary")))
        else:
            frames.append(Frame(frame.t, frame.source, text=str(scan.body(frame.text or "", f"{at} text"))))
    return WebSocketSession(
        uri=scan.text(session.uri, f"{where} uri"),
        dialect=session.dialect,
        frames=frames,
        request_headers=scan.headers(session.request_headers, f"{where} request.headers"),
        response_headers=scan.headers(session.response_headers, f"{where} response.headers"),
        close=scan.json(session.close, f"{where} close") if session.close is not None else None,
    )
