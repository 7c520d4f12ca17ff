"""Reports of a conformance run: the terminal table, JSON, JUnit XML, a self-contained HTML page,
per-case wire logs, and the baseline gate that decides a CI run's exit code.

Everything here is a pure view of a :class:`~replay.conformance.runner.RunReport`; the files are written
atomically so a CI job killed mid-write never uploads half a report. What a client sent is untrusted:
each string of it is cut (`replay.text.clip`), a lone surrogate is written as its escape, and the
console shows control characters as escapes, so any report can be written and read whatever came.
The HTML page is ``templates/report.html.j2`` (Jinja2, autoescaped): this module hands it plain strings
and numbers and builds no markup, so no field can be left unescaped by a missed call.
A run that was interrupted says so in every view, with the cases that did not finish.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import jinja2
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from replay.authoring.render import audio_bytes, summarize
from replay.cassettes.cassette import AUDIO_FIELD
from replay.clients.base import ClientOutcome
from replay.clients.command import OUTPUT_TAIL
from replay.conformance.runner import CRASH_TAIL, CaseResult, RunReport
from replay.conformance.verdicts import FAILED, INFORMATIONAL, NON_STRICT, NOT_REACHED, OK, ORDER
from replay.files import read_text, write_atomic
from replay.net.wirelog import WireLog, bounded_value
from replay.text import CLIENT_TEXT_LIMIT, clip, visible
from replay.wire.protocol import format_bytes_per_ms

COLORS = {OK: "green", INFORMATIONAL: "blue", NON_STRICT: "yellow", NOT_REACHED: "magenta", FAILED: "red"}
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
# Characters XML 1.0 cannot carry at all (ANSI escapes in a client's traceback, say).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


REASON_LIMIT = 4 * CLIENT_TEXT_LIMIT  # a reason quotes a few client strings, each already cut to the limit
KEPT_LINES = 50  # divergences and notes kept per case
TIMELINE_ROWS = 2000  # of a case's wire log in the HTML page (a client sending 100 000 frames makes no 100 MB page)
UNWRITABLE = "backslashreplace"  # a lone surrogate in a report: its escape, never a failed write
UNFINISHED = "UNFINISHED"  # a case the interrupted run did not finish (not a verdict: it has none)


def _client_label(report: RunReport) -> str:
    return f"{report.client} {report.client_version}" if report.client_version else report.client


def _tail(text: str, limit: int) -> str:
    """The last ``limit`` characters (where a traceback or a log says why), saying how many were cut."""
    return text if len(text) <= limit else f"({len(text) - limit} characters cut)\n{text[-limit:]}"


def _lines(values: Iterable[str]) -> list[str]:
    kept = [clip(str(v)) for v in values]
    return kept if len(kept) <= KEPT_LINES else [*kept[:KEPT_LINES], f"(and {len(kept) - KEPT_LINES} more)"]


def bounded(result: CaseResult) -> CaseResult:
    """The result with every string a client could make long cut, and its lists bounded: what reports show.

    The verdict and the runner cut what they build; this also holds for what a driver or the server
    put in a result, whatever it is."""
    verdict, outcome = result.verdict, result.outcome
    verdict = dataclasses.replace(
        verdict, reason=clip(verdict.reason, REASON_LIMIT), errors=tuple(bounded_value(e) for e in verdict.errors),
        actions=tuple(_lines(verdict.actions)), details=bounded_value(dict(verdict.details)))
    outcome = dataclasses.replace(
        outcome, output=outcome.output[-OUTPUT_TAIL:],
        output_dropped=outcome.output_dropped + max(0, len(outcome.output) - OUTPUT_TAIL),
        notes=_lines(outcome.notes), crashed=None if outcome.crashed is None else _tail(outcome.crashed, CRASH_TAIL),
        last_error_line=None if outcome.last_error_line is None else clip(outcome.last_error_line))
    return dataclasses.replace(result, verdict=verdict, outcome=outcome, divergences=_lines(result.divergences))


def _bounded_report(report: RunReport) -> RunReport:
    return dataclasses.replace(report, results=[bounded(r) for r in report.results])


def interruption(report: RunReport) -> str | None:
    """One line saying the run was interrupted and what it left unfinished; None for a whole run."""
    if not report.interrupted:
        return None
    by = f" by {report.signal}" if report.signal else ""
    left = report.unfinished
    ids = ", ".join(c.id for c in left[:20]) + (f" and {len(left) - 20} more" if len(left) > 20 else "")
    return (f"interrupted{by}: {len(report.results)} of {len(report.results) + len(left)} case(s) finished"
            + (f"; not finished: {ids}" if left else ""))


# ---------------------------------------------------------------------------- terminal


class ConsoleReport:
    """The terminal view, fitted to the console's width when printed.

    A line per case: its id and verdict never wrap, the title is shortened to what is left. A case
    that is not OK gets its reason on up to two lines below (``quiet``: only those cases, one line
    each). Everything is a `Text`, so brackets in a title or a reason are never read as markup.
    """

    def __init__(self, report: RunReport, *, quiet: bool = False, note: str | None = None) -> None:
        self.report = report
        self.quiet = quiet
        self.note = note

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        header = f"{_client_label(self.report)}{_note(self.note)} — rtreplay {self.report.tool_version}"
        yield _fit(Text(visible(header), style="bold"), width)
        id_width = max((len(visible(r.case.id)) for r in self.report.results), default=0)
        verdict_width = max(len(v) for v in ORDER)
        indent = " " * (id_width + 2)
        shortened = False
        for result in self.report.results:
            case, verdict = result.case, result.verdict.verdict
            if self.quiet and verdict == OK:
                continue
            line = Text(visible(case.id).ljust(id_width) + "  ")
            line.append(verdict.ljust(verdict_width), style=f"bold {COLORS.get(verdict, '')}")
            room = width - line.cell_len - 2
            if room >= 8:
                line.append("  ")
                line.append(_fit(Text(visible(case.title)), room))
            yield _fit(line, width)
            if verdict != OK:
                lines, cut = _reason_lines(visible(clip(result.verdict.reason, REASON_LIMIT)), width - len(indent),
                                           1 if self.quiet else 2)
                shortened = shortened or cut
                yield from (Text(indent) + part for part in lines)
        if shortened:
            yield _fit(Text("(reasons shortened to fit: --json, --html and --junit-xml have them whole)",
                            style="dim"), width)
        if stopped := interruption(self.report):
            for part in textwrap.wrap(visible(stopped), max(width, 20), break_long_words=False) or [""]:
                yield Text(part, style="bold yellow")


def _note(note: str | None) -> str:
    return f", {note}" if note else ""


def _fit(text: Text, width: int) -> Text:
    """One line of at most ``width`` cells, ending in an ellipsis when shortened."""
    text.no_wrap = True
    text.truncate(max(width, 1), overflow="ellipsis")
    return text


def _reason_lines(reason: str, width: int, most: int) -> tuple[list[Text], bool]:
    """A reason wrapped at spaces (never inside an id or a code) on at most ``most`` lines; whether it was cut."""
    width = max(width, 20)
    lines = textwrap.wrap(reason, width, break_long_words=False, break_on_hyphens=False) or [""]
    cut = len(lines) > most or any(cell_len(line) > width for line in lines)
    kept = lines[:most]
    if len(lines) > most:
        words = kept[-1].split()
        while len(words) > 1 and cell_len(" ".join(words)) + 2 > width:
            words.pop()  # whole words only, so no id or code is cut in two
        kept[-1] = " ".join(words) + " …"
    return [_fit(Text(line), width) for line in kept], cut


def coverage(report: RunReport) -> tuple[int, int]:
    """(cases reached, cases run): a case is reached unless the client never took it to the cut."""
    return sum(1 for r in report.results if r.verdict.verdict != NOT_REACHED), len(report.results)


def summary_line(report: RunReport, *, note: str | None = None) -> str:
    """One line for a CI log: coverage, then every verdict counted even at zero so runs compare at a glance."""
    counts = report.counts()
    reached, total = coverage(report)
    tally = ", ".join(f"{counts.get(verdict, 0)} {verdict}" for verdict in ORDER)
    stopped = f" (interrupted{f' by {report.signal}' if report.signal else ''}: {len(report.unfinished)} " \
        "case(s) not finished)" if report.interrupted else ""
    return (f"{_client_label(report)}{_note(note)}: {reached} of {total} case{'' if total == 1 else 's'} reached — "
            f"{tally} in {report.duration:.1f} s{stopped}")


# ---------------------------------------------------------------------------- JSON and logs


def _case_json(result: CaseResult, *, include_logs: bool = False) -> dict[str, Any]:
    """A case as plain JSON values; the wire log only on request, as it is most of a report's size."""
    case, verdict, outcome = result.case, result.verdict, result.outcome
    out: dict[str, Any] = {
        "id": case.id,
        "title": case.title,
        "area": case.area,
        "scenario": case.scenario,
        "cassette": case.cassette_name,
        "cassette_path": str(case.cassette),
        "session": case.session_index,
        "cut": case.cut,
        "verdict": verdict.verdict,
        "reason": verdict.reason,
        "errors": list(verdict.errors),
        "actions": list(verdict.actions),
        "estimate_ms": verdict.estimate_ms,
        "details": dict(verdict.details),
        "divergences": list(result.divergences),
        "duration": round(result.duration, 3),
        "exit_code": outcome.exit_code,
        "stopped_by_runner": outcome.stopped_by_runner,
        "last_error_line": outcome.last_error_line,
        "notes": list(outcome.notes),
        "crashed": outcome.crashed,
        "output": outcome.output,
        "output_dropped": outcome.output_dropped,
    }
    if include_logs:
        out["wire_log"] = result.log
    return out


def to_json(report: RunReport, *, include_logs: bool = False,
            settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole run as JSON values, for tools that compare runs or render their own views.

    ``settings``: the conditions of the run worth comparing across runs (the server's latency, say).
    """
    reached, total = coverage(report)
    report = _bounded_report(report)
    return {
        "client": report.client,
        "client_version": report.client_version,
        "tool_version": report.tool_version,
        "started_at": report.started_at,
        "duration": round(report.duration, 3),
        "settings": dict(settings or {}),
        "reached": reached,
        "selected": total,
        "counts": report.counts(),
        "interrupted": report.interrupted,
        "signal": report.signal,
        "unfinished": [{"id": c.id, "title": c.title, "cassette": c.cassette_name, "cut": c.cut}
                       for c in report.unfinished],
        "cases": [_case_json(result, include_logs=include_logs) for result in report.results],
    }


def write_json(report: RunReport, path: str | Path, *, include_logs: bool = False,
               settings: Mapping[str, Any] | None = None) -> None:
    data = to_json(report, include_logs=include_logs, settings=settings)
    write_atomic(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n", errors=UNWRITABLE)


def write_logs(report: RunReport, directory: str | Path) -> list[Path]:
    """``<id>.jsonl`` per case, the format `WireLog` writes, so a log reads the same from either."""
    written = []
    for result in report.results:
        path = Path(directory) / f"{result.case.id}.jsonl"
        WireLog(result.log).save(path)
        written.append(path)
    return written


# ---------------------------------------------------------------------------- JUnit XML


def _xml_text(text: str) -> str:
    """Make text XML 1.0 can hold: a control character becomes a visible ``\\xNN``."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _failure_text(result: CaseResult) -> str:
    """What a CI reviewer needs without opening the HTML: the server's errors, divergences, the client's actions."""
    verdict = result.verdict
    parts = [f"{verdict.verdict}: {verdict.reason}",
             f"cassette {result.case.cassette_name} session {result.case.session_index}, cut {result.case.cut}"]
    if verdict.errors:
        parts.append("server error frame(s):\n" + "\n".join(json.dumps(e, indent=2, ensure_ascii=False)
                                                             for e in verdict.errors))
    if result.divergences:
        parts.append("divergences from the recording:\n" + "\n".join(f"- {d}" for d in result.divergences))
    parts.append(_client_text(result))
    return "\n\n".join(parts)


def _client_text(result: CaseResult) -> str:
    """The client's side of a case: what it sent after the cut, the playback estimate, its own notes."""
    actions = result.verdict.actions
    lines = ["client actions after the cut:", *(f"- {a}" for a in actions or ["(nothing)"])]
    if result.verdict.estimate_ms is not None:
        lines.append(f"playback estimate at the cut: {result.verdict.estimate_ms} ms")
    if fate := exit_text(result.outcome):
        lines.append(f"client: {fate}")
    if result.outcome.last_error_line:
        lines.append(f"client's last error line: {result.outcome.last_error_line}")
    lines += [f"client note: {note}" for note in result.outcome.notes]
    return "\n".join(lines)


def exit_text(outcome: ClientOutcome) -> str | None:
    """How a program ended, so rtreplay's own SIGTERM never reads like a crash."""
    if outcome.exit_code is None:
        return None
    if outcome.stopped_by_runner:
        return f"still running after the case: stopped by rtreplay (exit code {outcome.exit_code})"
    return f"exited on its own with code {outcome.exit_code}"


def _out_text(result: CaseResult) -> str:
    verdict = result.verdict
    return (f"{verdict.verdict}: {verdict.reason}\ncut {result.case.cut} of {result.case.cassette_name}\n"
            + _client_text(result))


def _err_text(result: CaseResult) -> str:
    outcome = result.outcome
    parts = []
    if outcome.crashed:
        parts.append(f"the client crashed:\n{outcome.crashed}")
    if outcome.output:
        parts.append(f"client output (its last {min(len(outcome.output), 8000)} characters):\n"
                     f"{outcome.output[-8000:]}")
    return "\n\n".join(parts)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _xml_text(v) for k, v in attrs.items()})
    if text is not None:
        element.text = _xml_text(text)
    return element


def write_junit(report: RunReport, path: str | Path, *, strict: bool = False,
                settings: Mapping[str, Any] | None = None) -> None:
    """One suite, one testcase per case; NON-STRICT is a failure only when ``strict`` (as the gate counts it),
    and a case the client never reached is skipped, with the reason."""
    report = _bounded_report(report)
    failing = {id(r) for r in report.failed(strict=strict)}
    suite_name = f"rtreplay {report.client}"
    total, failures, time = str(len(report.results) + len(report.unfinished)), str(len(failing)), \
        f"{report.duration:.3f}"
    errors = str(len(report.unfinished))
    skipped = str(report.counts().get(NOT_REACHED, 0))
    root = ET.Element("testsuites", {"name": _xml_text(suite_name), "tests": total, "failures": failures,
                                     "errors": errors, "time": time})
    suite = _sub(root, "testsuite", name=suite_name, tests=total, failures=failures, errors=errors, skipped=skipped,
                 time=time, timestamp=report.started_at, hostname="localhost")
    properties = _sub(suite, "properties")
    stopped = (("interrupted", report.signal or "true"),) if report.interrupted else ()
    for name, value in (("client", report.client), ("client_version", report.client_version or "unknown"),
                        ("rtreplay_version", report.tool_version), ("strict", str(strict).lower()),
                        *((key, str(value)) for key, value in (settings or {}).items()), *stopped):
        _sub(properties, "property", name=name, value=value)
    package = report.client.replace(".", "_")  # CI tools split classnames on dots into packages
    for result in report.results:
        case = result.case
        testcase = _sub(suite, "testcase", classname=f"rtreplay.{package}.{case.area}", name=f"{case.id} {case.title}",
                        time=f"{result.duration:.3f}")
        if id(result) in failing:
            codes = [str(e["error"]["code"]) for e in result.verdict.errors
                     if isinstance(e.get("error"), dict) and e["error"].get("code")]
            kind = codes[0] if codes else "rtreplay" if result.verdict.verdict == FAILED else NON_STRICT
            _sub(testcase, "failure", _failure_text(result), message=result.verdict.reason, type=kind)
        elif result.verdict.verdict == NOT_REACHED:
            _sub(testcase, "skipped", _out_text(result), message=f"{NOT_REACHED}: {result.verdict.reason}")
        else:
            _sub(testcase, "system-out", _out_text(result))
        if err := _err_text(result):
            _sub(testcase, "system-err", err)
    by = f" by {report.signal}" if report.signal else ""
    for case in report.unfinished:
        testcase = _sub(suite, "testcase", classname=f"rtreplay.{package}.{case.area}", name=f"{case.id} {case.title}",
                        time="0.000")
        _sub(testcase, "error", f"the run was interrupted{by} before this case finished: it has no verdict\n"
                                f"cut {case.cut} of {case.cassette_name}",
             message=f"interrupted{by} before the case finished", type="interrupted")
    ET.indent(root)
    write_atomic(Path(path), ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n", errors=UNWRITABLE)


# ---------------------------------------------------------------------------- HTML

_ARROWS = {"client": ("→", "client → server"), "server": ("←", "server → client")}


@functools.cache
def _templates() -> jinja2.Environment:
    """The page's markup and CSS live in ``templates/``; every value put in is escaped (autoescape), and a
    name the template does not know fails the render rather than printing nothing (StrictUndefined)."""
    return jinja2.Environment(loader=jinja2.PackageLoader("replay.conformance", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "html.j2"]),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


@dataclass(frozen=True)
class _Row:
    """A row of a case's wire log; plain text, the template escapes and marks it up."""

    t: str
    arrow: str  # ✂ the cut, · a mark, → ← a frame's direction
    arrow_title: str | None  # a frame's direction in words (a mark has none)
    kind: str
    fields: str
    classes: str
    notes: tuple[str, ...] = ()  # a refused rule, a divergence: shown strong
    origin: str | None = None  # who made a server frame, when not the recording


@dataclass(frozen=True)
class _Fact:
    """A line of a case's facts: ``lines`` are shown one a line, ``pre`` as blocks, ``code`` and ``verdict``
    (a badge and the reason) as one value."""

    name: str
    values: tuple[str, ...]
    kind: Literal["lines", "pre", "code", "verdict"] = "lines"
    verdict: str = ""


@dataclass(frozen=True)
class _Case:
    id: str
    title: str
    cassette: str
    cut: str
    verdict: str
    reason: str
    facts: tuple[_Fact, ...] = ()
    timeline: tuple[_Row, ...] = ()
    timeline_cut: bool = False  # more rows than TIMELINE_ROWS: only the first are shown


def _audio_rates(session: dict[str, Any]) -> tuple[int, int]:
    """(input, output) bytes per ms announced by a GA or beta session object."""
    audio = session.get("audio")
    if isinstance(audio, dict):
        return (format_bytes_per_ms((audio.get("input") or {}).get("format")),
                format_bytes_per_ms((audio.get("output") or {}).get("format")))
    return (format_bytes_per_ms(session.get("input_audio_format")),
            format_bytes_per_ms(session.get("output_audio_format")))


def _runs(entries: Iterable[dict[str, Any]]) -> Iterator[tuple[list[dict[str, Any]], bool]]:
    """The timeline's entries, each with whether it follows the cut; a run of audio frames the same way
    (before or after the cut) comes as one group, so 50 microphone appends do not bury the cut."""
    flat: list[tuple[int, dict[str, Any], bool]] = []
    after_cut = False
    for index, entry in enumerate(entries):
        if entry.get("mark") in ("case", "client"):
            continue  # the case header and the client's outcome are shown above the timeline
        after_cut = after_cut or bool(entry.get("cut"))
        flat.append((index, entry, after_cut))

    def run_key(item: tuple[int, dict[str, Any], bool]) -> tuple[object, ...]:
        index, entry, after = item
        etype = (entry.get("event") or {}).get("type")
        return (entry.get("dir"), etype, after) if etype in AUDIO_FIELD else (index,)

    for _, group in groupby(flat, key=run_key):
        items = list(group)
        yield [entry for _, entry, _ in items], items[0][2]


def _timeline(entries: Iterable[dict[str, Any]]) -> Iterator[_Row]:
    """Rows of the wire log: time, direction, event type, the fields a reader scans for."""
    rates = {"client": 48, "server": 48}  # bytes per ms, from the session's announced audio formats
    for run, after in _runs(entries):
        entry = run[0]
        t = f"{entry.get('t', 0):.3f}" + (f"–{run[-1].get('t', 0):.3f}" if len(run) > 1 else "")
        if "mark" in entry:
            cut = bool(entry.get("cut"))
            yield _Row(t, "✂" if cut else "·", None, "CUT" if cut else "mark", str(entry["mark"]),
                       "cut" if cut else "mark")
            continue
        direction = str(entry.get("dir"))
        event = entry.get("event")
        classes = [direction, *(["after-cut"] if after else [])]
        if isinstance(event, dict):
            kind = str(event.get("type"))
            if direction == "server" and kind in ("session.created", "session.updated"):
                rates["client"], rates["server"] = _audio_rates(event.get("session") or {})
            if kind == "error":
                classes.append("error")
            per_ms = rates.get(direction, 48)
            if len(run) > 1:
                size = sum(audio_bytes(e["event"]) or 0 for e in run)
                fields = f"×{len(run)} frames: audio {size / per_ms:.0f} ms ({size} B)"
            else:
                fields = summarize(event, per_ms)
        else:
            kind = "(binary)" if "binary_bytes" in entry else "(text)"
            fields = f"{entry['binary_bytes']} bytes" if "binary_bytes" in entry else repr(entry.get("text"))
        notes = (f"refused: rule {entry['rule']}" if entry.get("rule") else "",
                 f"divergence: {entry['divergence']}" if entry.get("divergence") else "")
        origin = entry.get("origin")
        arrow, title = _ARROWS.get(direction, ("?", direction))
        yield _Row(t, arrow, title, kind, fields, " ".join(classes), tuple(note for note in notes if note),
                   None if origin in (None, "recorded") else str(origin))


def _facts(result: CaseResult) -> Iterator[_Fact]:
    case, verdict, outcome = result.case, result.verdict, result.outcome
    yield _Fact("verdict", (verdict.reason,), "verdict", verdict.verdict)
    yield _Fact("cassette", (f"{case.cassette_name} (session {case.session_index})",))
    yield _Fact("cut", (case.cut,))
    yield _Fact("area", (f"{case.area} · {case.scenario}",))
    yield _Fact("actions", tuple(verdict.actions) or ("(nothing after the cut)",))
    if verdict.estimate_ms is not None:
        yield _Fact("playback estimate", (f"{verdict.estimate_ms} ms",))
    if verdict.details:
        yield _Fact("server state", (", ".join(f"{k}={v}" for k, v in verdict.details.items()),))
    if result.divergences:
        yield _Fact("divergences", tuple(result.divergences))
    if verdict.errors:
        yield _Fact("server errors", tuple(json.dumps(e, indent=2, ensure_ascii=False) for e in verdict.errors),
                    "pre")
    if fate := exit_text(outcome):
        yield _Fact("the program", (fate,))
    if outcome.last_error_line:
        yield _Fact("last error line", (outcome.last_error_line,), "code")
    if outcome.notes:
        yield _Fact("client notes", tuple(outcome.notes))
    if outcome.crashed:
        yield _Fact("client crashed", (outcome.crashed,), "pre")
    if outcome.output:
        dropped = f"({outcome.output_dropped} earlier characters not kept)\n" if outcome.output_dropped else ""
        yield _Fact("client output", (dropped + outcome.output,), "pre")
    yield _Fact("duration", (f"{result.duration:.2f} s",))


def _case(result: CaseResult) -> _Case:
    case, verdict = result.case, result.verdict
    timeline = tuple(itertools.islice(_timeline(result.log), TIMELINE_ROWS + 1))
    return _Case(case.id, case.title, case.cassette_name, case.cut, verdict.verdict, verdict.reason,
                 tuple(_facts(result)), timeline[:TIMELINE_ROWS], len(timeline) > TIMELINE_ROWS)


def render_html(report: RunReport, *, settings: Mapping[str, Any] | None = None) -> str:
    """One page with no external assets, so it can be attached to a CI run and opened offline.

    This side only gathers plain strings and numbers; ``templates/report.html.j2`` is the markup (and
    ``report.css``, inlined), with every value escaped there."""
    report = _bounded_report(report)
    counts = report.counts()
    reached, total = coverage(report)
    return _templates().get_template("report.html.j2").render(
        label=_client_label(report), tool_version=report.tool_version, started_at=report.started_at,
        reached=reached, total=total, duration=f"{report.duration:.1f} s", stopped=interruption(report),
        settings=[(str(key), str(value)) for key, value in (settings or {}).items()],
        counts=[(verdict, counts.get(verdict, 0)) for verdict in ORDER],
        cases=[_case(r) for r in report.results],
        unfinished=[_Case(c.id, c.title, c.cassette_name, c.cut, UNFINISHED, "") for c in report.unfinished],
        NOT_REACHED=NOT_REACHED, UNFINISHED=UNFINISHED, TIMELINE_ROWS=TIMELINE_ROWS)


def write_html(report: RunReport, path: str | Path, *, settings: Mapping[str, Any] | None = None) -> None:
    write_atomic(Path(path), render_html(report, settings=settings), errors=UNWRITABLE)


# ---------------------------------------------------------------------------- baseline and gate


@dataclass
class Gate:
    """The run's exit code and why: new failures fail it, and so does a baseline that lists passing cases."""

    exit_code: int
    new_failures: list[str]
    known_failures: list[str]
    stale: list[str]
    message: str


def _failing_ids(report: RunReport, *, strict: bool) -> list[str]:
    return list(dict.fromkeys(r.case.id for r in report.failed(strict=strict)))


def load_baseline(path: str | Path) -> set[str]:
    """Known failing case ids from JSON (``{"failing": [...]}``) or text (one id per line, ``#`` comments)."""
    path = Path(path)
    text = read_text(path, "a baseline is JSON or one case id per line", ValueError)
    if text.lstrip().startswith(("{", "[")):
        return _json_baseline(text, path)
    ids: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        token = line.split("#", 1)[0].strip()
        if not token:
            continue
        if not _CASE_ID.match(token):
            raise ValueError(f"{path}, line {number}: {token!r} is not a case id (a text baseline has one id "
                             "such as RT-INT-3 per line, # starts a comment)")
        ids.add(token)
    return ids


def _json_baseline(text: str, path: Path) -> set[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    failing = data.get("failing") if isinstance(data, dict) else None
    if not isinstance(failing, list):
        raise ValueError(f'{path}: a JSON baseline is an object with a "failing" list of case ids, '
                         'e.g. {"client": "reference-fixed", "failing": ["RT-INT-3"]}')
    bad = [value for value in failing if not isinstance(value, str) or not _CASE_ID.match(value)]
    if bad:
        raise ValueError(f'{path}: "failing" holds something that is not a case id: {bad[0]!r}')
    return set(failing)


def write_baseline(report: RunReport, path: str | Path, *, strict: bool = False) -> None:
    """The currently failing ids, in case order, so the file diffs cleanly between runs."""
    data = {"client": report.client, "strict": strict, "failing": _failing_ids(report, strict=strict)}
    write_atomic(Path(path), json.dumps(data, indent=2) + "\n")


def gate(report: RunReport, *, strict: bool = False, baseline: set[str] | None = None) -> Gate:
    """Exit 1 on a failure the baseline does not list, or on a listed case of this run that now passes."""
    failing = _failing_ids(report, strict=strict)
    known_set = baseline or set()
    new = [i for i in failing if i not in known_set]
    known = [i for i in failing if i in known_set]
    stale = list(dict.fromkeys(r.case.id for r in report.results if r.case.id in known_set and r.case.id not in
                               failing))
    counted = "FAILED or NON-STRICT" if strict else "FAILED"
    lines = []
    if new:
        lines.append(f"{len(new)} new failure(s) ({counted}): {', '.join(new)}")
    if stale:
        lines.append(f"stale baseline: {', '.join(stale)} now pass(es); remove them from the baseline")
    if known:
        lines.append(f"{len(known)} known failure(s) listed in the baseline: {', '.join(known)}")
    if not failing:
        lines.append(f"none of {len(report.results)} case(s) {counted}")
    non_strict = report.counts().get(NON_STRICT, 0)
    if non_strict and not strict:
        lines.append(f"{non_strict} NON-STRICT case(s) do not fail the run (strict mode would fail them)")
    exit_code = 1 if new or stale else 0
    message = ("FAIL: " if exit_code else "PASS: ") + "; ".join(lines)
    return Gate(exit_code, new, known, stale, message)
