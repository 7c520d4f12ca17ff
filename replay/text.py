"""Untrusted text made safe to show: what a client or a cassette says never drives a terminal.

Client ids, a program's stderr and cassette fields reach console lines, CI logs and reports. An
ESC, an OSC 8 hyperlink, a carriage return or a bidirectional override in them would repaint the
screen or hide what is shown, so every such character is shown as its escape (``\\x1b``), and a
string a client sent is cut to a size a reader and a report can hold.
"""

from __future__ import annotations

import re

CLIENT_TEXT_LIMIT = 2000  # characters of one client-supplied string kept in a reason or a report

# C0 and C1 controls and DEL; bidi embeddings, overrides and isolates (Trojan Source); lone surrogates
# (unencodable, so they would crash a write); the line and paragraph separators some terminals honour.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                                "\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """The text with every control character shown as its escape; newlines kept only if asked (a tail of lines)."""
    return (_UNSAFE_KEEP_LINES if keep_newlines else _UNSAFE).sub(_escape, text)


def clip(text: str, limit: int = CLIENT_TEXT_LIMIT) -> str:
    """At most ``limit`` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def shown(text: str, limit: int = CLIENT_TEXT_LIMIT) -> str:
    """A client's or a cassette's string as a console line or a report may hold it: visible, and cut."""
    return visible(clip(text, limit))
