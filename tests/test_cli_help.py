"""`--help` reads like a good CLI's at 80 columns: values named by what they are, flags bare, nothing cut."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["", "serve", "show", "check", "record", "import", "matrix", "lint"]


def help_text(command: str) -> str:
    """The help as a user's 80-column terminal gets it: a real process, so rich reads COLUMNS as it would."""
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *command.split(), "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_names_values_and_cuts_nothing(command: str) -> None:
    text = help_text(command)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text, text  # rich's ellipsis: an option name cut
    dots = re.findall(r"\S*\.\.\.", text)
    assert set(dots) <= {"[ARGS]...", "CASSETTE..."}, dots  # only usage's "repeatable"
    for metavar in ("<bool>", "<list[", "<int", "<str>", "<float>", "<path>", "range]", "{"):
        assert metavar not in text, (metavar, text)


def test_flags_take_no_value_and_values_are_named() -> None:
    text = help_text("check")
    rows = {line.split()[1]: line.split()[2:] for line in text.splitlines() if line.startswith("│ --")}
    for flag in ("--strict", "--all-cuts", "--list", "--help"):
        assert rows[flag][0][0].isupper() and rows[flag][0] not in {"NAME", "PATH"}, rows[flag]  # help text follows
    assert (rows["--shard"][0], rows["--logs"][0], rows["--latency"][0], rows["--case"][0]) == ("K/N", "DIR", "MS",
                                                                                               "GLOB")
    assert help_text("serve").splitlines()[1].split()[-1] == "CASSETTE"  # the usage line, no {cassette}


def test_a_port_out_of_range_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["serve", "ga_server_vad_turn", "--port", "70000"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "--port 70000: a TCP port is 0 to 65535" in result.output


# ---------------------------------------------------------------------------- output in a log, not a terminal


def test_matrix_into_a_pipe_is_only_the_table() -> None:
    """A progress bar in a log was a blank line per client before the table."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "matrix", "--case", "RT-TXT-1", "--client",
                             "reference-naive", "--client", "reference-fixed"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "" not in lines, result.stdout
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 3 and lines[-3:] == table, result.stdout  # header, rule, one case; progress lines above


def test_a_sweep_in_a_log_says_it_is_alive_and_a_shard_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    import cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)  # a line per finished case
    result = CliRunner().invoke(app, ["check", "--client", "reference-fixed", "--case", "RT-INT-1*", "--shard", "1/2",
                                      "--quiet", "--speed", "0"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    progress = re.findall(r"^reference-fixed: \[(\d+)/(\d+)\] (\d+) %, elapsed \d+\.\d s$", result.output, re.M)
    total = int(progress[-1][1])
    done = [int(d) for d, _, _ in progress]
    assert done == sorted(done) and set(range(1, total + 1)) <= set(done) and progress[-1][2] == "100", done
    summary = [line for line in result.output.splitlines() if "cases reached" in line or "case reached" in line]
    assert summary and summary[0].startswith("shard 1/2: reference-fixed"), result.output
