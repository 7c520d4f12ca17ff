"""Writes that a failure can never leave half done: the old file stays whole, and no temp file stays behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.files import write_atomic


def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("the old report\n")
    with pytest.raises(UnicodeEncodeError):  # the text fails while it is being written, past its first line
        write_atomic(target, "a new first line\n" + "x" * 100_000 + "\ud800")
    assert target.read_text() == "the old report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
