"""The HTML report at the level of its DOM: a known run gives these rows, classes, ids and texts (so the
report keeps looking the same whatever renders it), whatever a client or a cassette puts in a field is
text and never markup or template code, and no markup is built in Python."""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from replay.clients.base import ClientOutcome
from replay.conformance import reports
from replay.conformance.runner import CaseResult, RunReport
from replay.conformance.verdicts import FAILED, NOT_REACHED, OK, Verdict
from tests.test_reports import ERROR_FRAME, TRUNCATE, result

VOID = {"meta", "br", "img", "input", "link", "hr", "source", "embed", "wbr", "area", "base", "col", "track"}
# Every element and attribute the report's template writes: anything else came from a value.
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "table", "thead", "tbody", "tr",
        "th", "td", "a", "br", "small", "details", "summary", "dl", "dt", "dd", "pre", "code", "strong"}
ATTRIBUTES = {"lang", "charset", "name", "content", "class", "id", "href", "title"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag: str | None = None, cls: str | None = None) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    yield child
                yield from child.iter(tag, cls)

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        return list(self.iter(tag, cls))

    def one(self, tag: str, cls: str | None = None) -> Node:
        found = self.all(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]


class _Tree(HTMLParser):
    """The page as a tree; an end tag that closes anything but the open element fails (no tag soup)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        assert len(node.attrs) == len(attrs), f"a repeated attribute in <{tag}>"
        self.open[-1].children.append(node)
        if tag not in VOID:
            self.open.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.open[-1].tag == tag, f"</{tag}> closes <{self.open[-1].tag}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def dom(page: str) -> Node:
    tree = _Tree()
    tree.feed(page)
    tree.close()
    assert tree.open == [tree.root], [n.tag for n in tree.open]
    return tree.root


def cells(row: Node) -> list[str]:
    return [td.text() for td in row.all("td")]


def long_log(frames: int) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = [{"mark": "case", "case": "RT-INT-4"}]
    log += [{"t": i / 1000, "dir": "client", "event": {"type": "response.create"}} for i in range(frames)]
    return log


@pytest.fixture
def run() -> RunReport:
    """A run interrupted by SIGTERM: an OK case, a FAILED one with everything a case can show, a NOT-REACHED
    one, a case with a wire log longer than the page keeps, and two cases left unfinished."""
    refused = {**TRUNCATE, "rule": "T1", "divergence": "the recording has no conversation.item.truncate here"}
    failed = result("RT-TXT-1", "TXT", Verdict(FAILED, "server error unsupported_content_type: " + "y" * 9000,
                                               (ERROR_FRAME,), ("truncate item_a audio_end_ms=300", "delete item_a"),
                                               300, {"produced_ms": 600}),
                    [refused, {"t": 0.34, "dir": "server", "origin": "engine", "event": ERROR_FRAME}],
                    outcome=ClientOutcome(exit_code=1, output="a" * 50, output_dropped=7, notes=["sent a truncate"],
                                          crashed="Traceback\nValueError: boom",
                                          last_error_line="ValueError: boom"),
                    divergences=["client frame #3: not in the recording"])
    unreached = result("RT-FN-12", "FN", Verdict(NOT_REACHED, "the replay waited 3.0 s"), [],
                       outcome=ClientOutcome(exit_code=-15, stopped_by_runner=True))
    ok = result("RT-INT-1", "INT", Verdict(OK, "truncated at 300 ms", (), ("truncate item_a audio_end_ms=300",), 300),
                [TRUNCATE])
    long = dataclasses.replace(result("RT-INT-4", "INT", Verdict(OK, "fine"), []), log=long_log(2500))
    long = dataclasses.replace(long, case=dataclasses.replace(long.case, id="RT-INT-4"))
    return RunReport("reference-fixed", "0.1.0", "2026-01-01T12:00:00+00:00", 1.84, [ok, failed, unreached, long],
                     interrupted=True, signal="SIGTERM",
                     unfinished=[dataclasses.replace(ok.case, id="RT-INT-5", title="left <i>unfinished</i>"),
                                 dataclasses.replace(ok.case, id="RT-INT-6")])


def test_the_page_holds_the_runs_summary_cases_and_timelines(run: RunReport) -> None:
    page = dom(reports.render_html(run, settings={"latency_ms": 50.0}))
    html = page.one("html")
    assert html.attrs == {"lang": "en"} and [e.tag for e in html.elements()] == ["head", "body"]
    assert page.one("title").text() == "rtreplay — reference-fixed 0.1.0"
    css = resources.files("replay.conformance").joinpath("templates/report.css").read_text(encoding="utf-8")
    assert page.one("style").text() == "\n" + css  # the CSS file, inlined whole: the page stays self-contained
    assert page.all("link") == [] and page.all("script") == [] and page.all("img") == []
    body = page.one("body")
    assert [e.tag for e in body.elements()][:5] == ["h1", "p", "p", "p", "table"]
    assert body.one("h1").text() == "rtreplay conformance: reference-fixed 0.1.0"
    assert body.one("p", "interrupted").text() == (
        "interrupted by SIGTERM: 4 of 6 case(s) finished; not finished: RT-INT-5, RT-INT-6: this report holds only "
        "the cases that finished.")
    assert body.all("p", "meta")[0].text() == ("rtreplay 0.1.0 · started 2026-01-01T12:00:00+00:00 ·\n"
                                                "3 of 4 cases reached in 1.8 s · latency_ms 50.0")
    assert [(s.attrs["class"], s.text()) for s in body.one("p", "counts").all("span")] == [
        ("badge v-OK", "2 OK"), ("badge v-INFORMATIONAL", "0 INFORMATIONAL"), ("badge v-NON-STRICT", "0 NON-STRICT"),
        ("badge v-NOT-REACHED", "1 NOT-REACHED"), ("badge v-FAILED", "1 FAILED"),
        ("badge v-UNFINISHED", "2 UNFINISHED")]

    index = body.one("table", "cases")
    assert cells(index.one("thead")) == [] and [th.text() for th in index.all("th")] == [
        "case", "title", "cassette / cut", "verdict", "reason"]
    rows = index.one("tbody").all("tr")
    assert [r.attrs["class"] for r in rows] == ["", "", "not-reached", "", "not-reached", "not-reached"]
    assert [[a.attrs["href"] for a in r.all("a")] for r in rows] == [
        ["#case-RT-INT-1"], ["#case-RT-TXT-1"], ["#case-RT-FN-12"], ["#case-RT-INT-4"], [], []]
    assert [r.all("td")[3].one("span").attrs["class"] for r in rows] == [
        "badge v-OK", "badge v-FAILED", "badge v-NOT-REACHED", "badge v-OK", "badge v-UNFINISHED", "badge v-UNFINISHED"]
    cut = "after:response.output_audio.delta#3"
    assert cells(rows[0]) == ["RT-INT-1", "interrupt mid-audio", f"ga_turn{cut}", "OK", "truncated at 300 ms"]
    assert rows[0].all("td")[2].elements()[0].tag == "br" and rows[0].one("small").text() == cut
    reason = cells(rows[1])[4]
    assert reason.startswith("server error unsupported_content_type: yyy") and reason.endswith(" more characters)")
    assert len(reason) < reports.REASON_LIMIT + 40  # clipped
    assert cells(rows[4]) == ["RT-INT-5", "left <i>unfinished</i>", f"ga_turn{cut}", "UNFINISHED",
                              "the run was interrupted before this case finished"]

    sections = body.all("details")
    assert [d.attrs["id"] for d in sections] == ["case-RT-INT-1", "case-RT-TXT-1", "case-RT-FN-12", "case-RT-INT-4"]
    ok, failed, unreached, long = sections
    assert ok.one("summary").text() == "OKRT-INT-1 — interrupt mid-audio"
    assert ok.one("summary").one("span").attrs["class"] == "badge v-OK"
    facts = {dt.text(): dd for dt, dd in zip(failed.all("dt"), failed.all("dd"), strict=True)}
    assert list(facts) == ["verdict", "cassette", "cut", "area", "actions", "playback estimate", "server state",
                           "divergences", "server errors", "the program", "last error line", "client notes",
                           "client crashed", "client output", "duration"]
    assert facts["verdict"].one("span").attrs["class"] == "badge v-FAILED"
    assert facts["cassette"].text() == "ga_turn (session 0)" and facts["area"].text() == "TXT · mid-audio"
    assert [c if isinstance(c, str) else c.tag for c in facts["actions"].children] == [
        "truncate item_a audio_end_ms=300", "br", "delete item_a"]
    assert facts["server state"].text() == "produced_ms=600" and facts["playback estimate"].text() == "300 ms"
    assert '"code": "unsupported_content_type"' in facts["server errors"].one("pre").text()
    assert facts["the program"].text() == "exited on its own with code 1"
    assert facts["last error line"].one("code").text() == "ValueError: boom"
    assert facts["client crashed"].one("pre").text() == "Traceback\nValueError: boom"
    assert facts["client output"].one("pre").text() == "(7 earlier characters not kept)\n" + "a" * 50
    assert facts["duration"].text() == "0.42 s"
    assert {dt.text(): dd.text() for dt, dd in zip(ok.all("dt"), ok.all("dd"), strict=True)}["actions"] == (
        "truncate item_a audio_end_ms=300")
    assert [dd.text() for dt, dd in zip(unreached.all("dt"), unreached.all("dd"), strict=True)
            if dt.text() in ("actions", "the program")] == [
        "(nothing after the cut)", "still running after the case: stopped by rtreplay (exit code -15)"]

    wire = failed.one("table", "wire")
    assert [th.text() for th in wire.all("th")] == ["t (s)", "", "event", "fields"]
    timeline = wire.one("tbody").all("tr")
    assert [(r.attrs["class"], cells(r)) for r in timeline] == [
        ("server", ["0.010", "←", "session.created", ""]),
        ("client", ["0.100–0.120", "→", "input_audio_buffer.append", "×3 frames: audio 300 ms (14400 B)"]),
        ("server", ["0.300", "←", "response.output_audio.delta", "audio 100 ms (800 B)  item_id=item_a"]),
        ("cut", ["0.310", "✂", "CUT", f"cut {cut}: the user starts speaking"]),
        ("server after-cut", ["0.320", "←", "input_audio_buffer.speech_started",
                              "item_id=item_u  audio_start_ms=300 [barge-in]"]),
        ("client after-cut", ["0.330", "→", "conversation.item.truncate",
                              "item_id=item_a  content_index=0  audio_end_ms=300 refused: rule T1 divergence: the "
                              "recording has no conversation.item.truncate here"]),
        ("server after-cut error", ["0.340", "←", "error", "unsupported_content_type: Only model output audio messages "
                                                            "can be truncated [engine]"]),
        ("mark", ["0.700", "·", "mark", "window closed"]),
    ]
    assert [td.attrs for td in timeline[0].all("td")] == [{"class": "t"}, {"class": "dir"}, {}, {}]
    assert timeline[1].one("span").attrs == {"title": "client → server"}
    assert timeline[0].one("span").attrs == {"title": "server → client"}
    assert timeline[3].all("span") == []  # a mark's symbol is bare
    assert [s.text() for s in timeline[5].all("strong")] == [
        "refused: rule T1", "divergence: the recording has no conversation.item.truncate here"]
    assert [(s.attrs, s.text()) for s in timeline[4].all("span")][1:] == [({"class": "origin"}, "[barge-in]")]

    long_rows = long.one("table", "wire").one("tbody").all("tr")
    assert len(long_rows) == reports.TIMELINE_ROWS + 1  # the bound, and a row saying so
    assert cells(long_rows[-2])[:3] == ["1.999", "→", "response.create"]
    assert (long_rows[-1].attrs["class"], cells(long_rows[-1])) == ("mark", [
        "", "·", "…", f"only the first {reports.TIMELINE_ROWS} rows are shown: --logs DIR keeps the whole wire log"])


def test_a_whole_run_has_no_banner_and_no_unfinished(run: RunReport) -> None:
    whole = dataclasses.replace(run, interrupted=False, signal=None, unfinished=[])
    page = dom(reports.render_html(whole))
    assert page.all("p", "interrupted") == [] and page.all("span", "v-UNFINISHED") == []
    assert len(page.one("table", "cases").one("tbody").all("tr")) == 4
    assert page.all("p", "meta")[0].text().endswith("3 of 4 cases reached in 1.8 s")


PAYLOADS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>",
            "{{ 7*7 }}", "{% raw %}", "{% endraw %}{{ config }}", "{# c #}", "</td></tr></tbody></table></details>",
            "&amp;&lt;", "javascript:alert(1)"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_field_a_client_or_a_cassette_controls_is_text(payload: str) -> None:
    bad = f"x{payload}y"
    case = dataclasses.replace(result("RT-INT-1", "INT", Verdict(OK, ""), []).case, id=bad, title=bad,
                               cassette_name=bad, cut=bad, area=bad, scenario=bad)
    log: list[dict[str, Any]] = [
        {"t": 0.1, "dir": "server", "origin": bad, "event": {"type": bad, "item_id": bad}},
        {"t": 0.2, "mark": bad, "cut": True},
        {"t": 0.3, "dir": "client", "text": bad, "rule": bad, "divergence": bad},
        {"t": 0.4, "dir": bad, "event": {"type": "error", "error": {"message": bad}}},
        {"t": 0.5, "mark": bad},
    ]
    outcome = ClientOutcome(exit_code=1, output=bad, output_dropped=3, notes=[bad], crashed=bad, last_error_line=bad)
    verdict = Verdict(FAILED, bad, ({"type": "error", "error": {"message": bad}},), (bad,), 300, {bad: bad})
    run = RunReport(bad, bad, bad, 1.0, [CaseResult(case, bad, verdict, 0.5, log, outcome, [bad])],
                    tool_version=bad, interrupted=True, signal=bad, unfinished=[case])
    page = dom(reports.render_html(run, settings={bad: bad}))

    elements = page.all()
    assert {e.tag for e in elements} <= TAGS
    assert {name for e in elements for name in e.attrs} <= ATTRIBUTES
    assert [e.attrs["href"] for e in page.all("a")] == [f"#case-{bad}"]  # the value, whole, inside its quotes
    assert page.one("details").attrs["id"] == f"case-{bad}"
    assert page.one("title").text() == f"rtreplay — {bad} {bad}"
    assert page.one("h1").text() == f"rtreplay conformance: {bad} {bad}"
    assert page.one("p", "interrupted").text().startswith(f"interrupted by {bad}: 1 of 2")
    assert page.one("summary").text() == f"FAILED{bad} — {bad}"
    rows = page.one("table", "cases").one("tbody").all("tr")
    assert [cells(r) for r in rows] == [[bad, bad, bad + bad, "FAILED", bad],
                                        [bad, bad, bad + bad, "UNFINISHED",
                                         "the run was interrupted before this case finished"]]
    facts = [(dt.text(), dd.text()) for dt, dd in zip(page.all("dt"), page.all("dd"), strict=True)]
    assert ("verdict", f"FAILED {bad}") in facts and ("last error line", bad) in facts
    assert ("client notes", bad) in facts and ("client crashed", bad) in facts and ("divergences", bad) in facts
    assert ("server state", f"{bad}={bad}") in facts and ("actions", bad) in facts
    assert ("client output", f"(3 earlier characters not kept)\n{bad}") in facts
    timeline = page.one("table", "wire").one("tbody").all("tr")
    assert [r.attrs["class"] for r in timeline] == ["server", "cut", "client after-cut", f"{bad} after-cut error",
                                                    "mark"]
    assert cells(timeline[0])[2:] == [bad, f"item_id={bad} [{bad}]"]
    assert cells(timeline[1])[2:] == ["CUT", bad] and cells(timeline[4])[2:] == ["mark", bad]
    assert cells(timeline[2])[3] == f"{bad!r} refused: rule {bad} divergence: {bad}"
    assert timeline[3].one("span").attrs["title"] == bad
    assert page.all("p", "meta")[0].text().endswith(f" · {bad} {bad}")


def test_no_markup_is_built_in_python() -> None:
    """The page's markup is the template's: no string in reports.py opens or closes an HTML element."""
    source = Path(reports.__file__).read_text(encoding="utf-8")
    strings = [node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    element = re.compile(rf"</?({'|'.join(sorted(TAGS))})\b[^<>]*>")
    assert [s for s in strings if element.search(s)] == []
