"""What a hostile `--cmd` client sends cannot break or bloat `rtreplay check`'s reports, nor drive a terminal:
a 10 MB item id, a lone surrogate, escape sequences in its ids and on its stderr. And a report's temp file
that a killed write left behind is swept by the next write of that report."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from replay.files import write_atomic

ROOT = Path(__file__).resolve().parents[2]
NAIVE = ROOT / "examples" / "naive_client.py"
CASE = "RT-INT-5"  # after the first audio delta: a truncate of a wrong id is answered with an error quoting it

_CLIENT = """
import asyncio, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("naive", {naive!r})
naive = importlib.util.module_from_spec(spec)
spec.loader.exec_module(naive)
case = {plan!r}.get(os.environ["RTREPLAY_CASE"], {{}})
item_id = case.get("item_id", "") + "x" * case.get("pad", 0)

def quit_now():
    sys.stderr.write(case.get("stderr", ""))
    sys.stderr.flush()
    os._exit(case["exit"])

def on_interrupt(playing, held):
    if playing.item_id is None:  # the user's own turn starting, not a barge-in
        return []
    if case.get("exit") is not None:
        asyncio.get_running_loop().call_later(0.2, quit_now)
    extra = case.get("extra", {{}})
    if not item_id and not extra:
        return []
    return [{{"type": "conversation.item.truncate", "item_id": item_id or playing.item_id, "content_index": 0,
             "audio_end_ms": 0, **extra}}]

naive.on_interrupt = on_interrupt
if case.get("before_connect"):
    sys.stdout.write(case.get("stdout", ""))
    sys.stderr.write(case.get("stderr", ""))
    sys.exit(case["exit"])
asyncio.run(naive.main())
"""


def check(tmp_path: Path, plan: dict[str, dict[str, Any]], *args: str) -> subprocess.CompletedProcess[str]:
    """`rtreplay check` of a client that, per case id, truncates ``item_id`` (+ ``pad`` x's) at the barge-in
    and, with ``exit``, prints ``stderr`` and exits with that code 0.2 s later (``before_connect``: at once)."""
    script = tmp_path / "hostile_client.py"
    script.write_text(_CLIENT.format(naive=str(NAIVE), plan=plan), encoding="utf-8")
    command = f"exec {shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", "--cmd", command, "--speed", "0",
                           "--concurrency", "2", *args], env=env, capture_output=True, text=True,
                          errors="surrogateescape", timeout=180, cwd=tmp_path)


def reports(tmp_path: Path) -> list[str]:
    return ["--json", str(tmp_path / "r.json"), "--junit-xml", str(tmp_path / "r.xml"),
            "--html", str(tmp_path / "r.html"), "--logs", str(tmp_path / "logs")]


def test_a_10_mb_item_id_yields_reports_of_bounded_size(tmp_path: Path) -> None:
    done = check(tmp_path, {CASE: {"item_id": "item_", "pad": 10_000_000}}, "--case", CASE, *reports(tmp_path))

    assert done.returncode == 1, done.stderr  # FAILED: the server refused the truncate
    sizes = {p.name: p.stat().st_size for p in [*tmp_path.glob("r.*"), *(tmp_path / "logs").iterdir()]}
    assert set(sizes) == {"r.json", "r.xml", "r.html", f"{CASE}.jsonl"}
    assert all(size < 1_000_000 for size in sizes.values()), sizes  # today: 30 MB and more each
    report = json.loads((tmp_path / "r.json").read_text())["cases"][0]
    assert report["verdict"] == "FAILED" and "more characters)" in report["reason"]
    assert len(done.stdout) + len(done.stderr) < 100_000


def test_a_lone_surrogate_from_the_client_still_yields_every_report(tmp_path: Path) -> None:
    # Not in an id: the server would quote it back, and that is the server's to survive.
    plan = {CASE: {"extra": {"audio_end_ms": "lone \ud800 surrogate"}}}
    done = check(tmp_path, plan, "--case", CASE, *reports(tmp_path))

    assert done.returncode == 1, done.stderr  # a verdict (the server refused the type), not an error of ours
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["cases"][0]["actions"][0].endswith("audio_end_ms=lone \ud800 surrogate")  # its JSON escape
    junit = ET.parse(tmp_path / "r.xml").getroot()
    assert "lone \\xd800 surrogate" in ET.tostring(junit, encoding="unicode")
    assert "lone \\ud800 surrogate" in (tmp_path / "r.html").read_text(encoding="utf-8")
    log = (tmp_path / "logs" / f"{CASE}.jsonl").read_text(encoding="utf-8")
    assert any("lone \ud800 surrogate" in json.dumps(json.loads(line), ensure_ascii=False)
               for line in log.splitlines())


OSC_TITLE = "\x1b]0;you have been owned\x07"
OSC_LINK = "\x1b]8;;https://evil.example/\x07click me\x1b]8;;\x07"


def test_escape_sequences_in_ids_and_stderr_never_reach_the_console_raw(tmp_path: Path) -> None:
    plan = {"RT-INT-5": {"item_id": f"item_{OSC_LINK}\x1b[2J[bold red]markup[/]"},
            "RT-INT-6": {"exit": 3, "stderr": f"{OSC_TITLE}{OSC_LINK} fatal error: boom\x1b[31m\n"}}
    done = check(tmp_path, plan, "--case", "RT-INT-[56]")

    shown = done.stdout + done.stderr
    assert done.returncode == 1, shown
    assert "\x1b" not in shown and "\x07" not in shown, shown
    assert "\\x1b]8;;https://evil.example/\\x07click me" in shown  # the id, in the reason of RT-INT-5
    assert "\\x1b]0;you have been owned\\x07" in shown  # the program's last error line, in RT-INT-6's
    assert "[bold red]markup[/]" in shown  # never read as rich markup


def test_the_preflight_shows_a_programs_output_with_escapes_made_visible(tmp_path: Path) -> None:
    plan = {"RT-INT-1": {"before_connect": True, "exit": 1, "stdout": f"{OSC_LINK}\nstarting [red]up[/]\n",
                         "stderr": f"{OSC_TITLE}\x1b[2J\x1b[H fatal error: no key\n"}}
    done = check(tmp_path, plan, "--case", "RT-INT-1")

    assert done.returncode == 2, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr, done.stderr
    assert "\\x1b]0;you have been owned\\x07" in done.stderr and "starting [red]up[/]" in done.stderr
    assert "its output (last" in done.stderr


def test_a_temp_file_left_by_a_killed_write_is_swept_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    stale = tmp_path / ".r.json.k1ll3d_x.tmp"  # what write_atomic's mkstemp names: 8 characters
    stale.write_text('{"half": ')
    long_ago = time.time() - 3600
    os.utime(stale, (long_ago, long_ago))
    others = [tmp_path / ".r.json.notmine.tmp", tmp_path / ".other.json.k1ll3d_x.tmp", tmp_path / "r.json.tmp"]
    for other in others:
        other.write_text("not ours to remove")
        os.utime(other, (long_ago, long_ago))

    write_atomic(target, '{"whole": true}\n')

    assert target.read_text() == '{"whole": true}\n'
    assert not stale.exists()
    assert all(other.exists() for other in others)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r.json", *(o.name for o in others)])
