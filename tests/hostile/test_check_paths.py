"""`rtreplay check`'s output paths are tried before any work, and the files it reads are refused when
they are not regular files or are too large: one clear line naming the user's path, exit 2."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from replay.files import READ_LIMIT, read_text, write_atomic

ROOT = Path(__file__).resolve().parents[2]
ONE_CASE = ("--client", "reference-fixed", "--case", "RT-INT-1")


def _bounded() -> None:
    """A check that reads without end runs out of memory here, not on the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "check", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}, cwd=cwd, timeout=60,
                          preexec_fn=_bounded)


def test_a_report_inside_proc_fails_before_the_run_naming_the_users_path(tmp_path: Path) -> None:
    done = check(*ONE_CASE, "--junit-xml", "/proc/x.xml", cwd=tmp_path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: --junit-xml /proc/x.xml: cannot write in /proc"), done.stderr
    assert ".tmp" not in done.stderr and ".probe" not in done.stderr
    assert "RT-INT-1" not in done.stdout  # no case ran
    assert len(done.stderr.splitlines()) == 1


def test_a_refused_path_leaves_nothing_behind(tmp_path: Path) -> None:
    done = check(*ONE_CASE, "--json", str(tmp_path / "new" / "sub" / "r.json"), "--logs", str(tmp_path / "logs"),
                 "--html", "/proc/x.html", cwd=tmp_path)

    assert done.returncode == 2 and "--html /proc/x.html" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # neither the directories made to try --json, nor a probe file


def test_a_fifo_as_a_report_is_refused_and_left_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    done = check(*ONE_CASE, "--json", str(fifo), cwd=tmp_path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--json {fifo}: exists and is not a regular file" in done.stderr
    assert fifo.is_fifo()


def test_two_reports_in_one_file_are_refused(tmp_path: Path) -> None:
    done = check(*ONE_CASE, "--json", str(tmp_path / "r.out"), "--html", str(tmp_path / "r.out"), cwd=tmp_path)

    assert done.returncode == 2 and "--json and --html both name" in done.stderr, done.stderr


def test_a_failed_write_names_the_target_not_its_temp_file(tmp_path: Path) -> None:
    with pytest.raises(OSError) as raised:
        write_atomic(Path("/proc/rtreplay-report.json"), "{}\n")
    assert raised.value.filename == "/proc/rtreplay-report.json"
    assert ".tmp" not in str(raised.value)


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_baseline_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    baseline = Path(kind)
    if kind == "fifo":
        baseline = tmp_path / "baseline.txt"
        os.mkfifo(baseline)  # nobody ever writes to it: a read would wait forever
    try:
        done = check(*ONE_CASE, "--baseline", str(baseline), cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--baseline {baseline}: still reading after 60 s")

    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr == f"error: {baseline}: not a regular file (a device, a FIFO or a socket); a baseline is " \
                          "a file\n"


def test_a_file_larger_than_the_read_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "baseline.txt"
    with big.open("wb") as fh:
        fh.truncate(READ_LIMIT + 1)  # sparse: costs no disk
    with pytest.raises(ValueError, match=r"larger than 64 MiB"):
        read_text(big, "a baseline is JSON or one case id per line", ValueError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory")
def test_a_report_in_a_read_only_directory_fails_before_the_run(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        done = check(*ONE_CASE, "--json", str(locked / "r.json"), cwd=tmp_path)
    finally:
        locked.chmod(0o700)
    assert done.returncode == 2 and f"--json {locked / 'r.json'}: cannot write in {locked}" in done.stderr
