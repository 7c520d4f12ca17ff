"""The parsed-cassette cache: invisible (a hit equals a fresh parse), never stale, private to the user,
and never a reason for a load to fail."""

from __future__ import annotations

import datetime
import os
import shutil
import stat
from pathlib import Path

import pytest

from replay.cassettes.cassette import CassetteError, load, loads

from .conftest import CASSETTES

GOOD = CASSETTES / "ga_text_turn_audio_response.yaml"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh per-test cache under XDG_CACHE_HOME; the directory the entries go to."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "rtreplay"


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.cassette")) if cache.is_dir() else []


def copy_of(path: Path, tmp_path: Path) -> Path:
    target = tmp_path / "work" / path.name
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, target)
    return target


@pytest.mark.parametrize("path", sorted(CASSETTES.glob("*.yaml")), ids=lambda p: p.stem)
def test_a_cached_load_equals_a_fresh_parse(cache: Path, path: Path) -> None:
    fresh = loads(path.read_text(encoding="utf-8"), path)
    first, second = load(path), load(path)
    assert len(entries(cache)) == 1
    assert first == fresh and second == fresh
    assert second.sessions[0].frames[0].type == fresh.sessions[0].frames[0].type


def test_an_edited_cassette_is_never_served_stale(cache: Path, tmp_path: Path) -> None:
    path = copy_of(GOOD, tmp_path)
    before = os.stat(path)
    assert load(path).metadata["model"] == "gpt-realtime"
    assert load(path).metadata["model"] == "gpt-realtime"  # now from the cache
    # Same size, same modification time: only the content says it changed.
    path.write_text(path.read_text(encoding="utf-8").replace("  model: gpt-realtime\n", "  model: gpt-realtimX\n", 1),
                    encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size
    assert load(path).metadata["model"] == "gpt-realtimX"
    # Broken on disk: the same error as without a cache, not the last good version.
    path.write_text("version: 2\ninteractions: []\n", encoding="utf-8")
    with pytest.raises(CassetteError, match="unsupported cassette version 2"):
        load(path)
    path.unlink()
    with pytest.raises(CassetteError, match="no such cassette file"):
        load(path)


def test_a_loaded_cassette_is_the_callers_own(cache: Path) -> None:
    first = load(GOOD)
    first.metadata["model"] = "changed"
    first.sessions[0].frames.clear()
    again = load(GOOD)
    assert again.metadata["model"] == "gpt-realtime" and again.sessions[0].frames


def test_entries_are_private(cache: Path) -> None:
    load(GOOD)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    [entry] = entries(cache)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert [p.name for p in cache.iterdir()] == [entry.name]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["garbage", "truncated", "one byte flipped", "empty"])
def test_a_corrupt_entry_is_ignored_and_rewritten(cache: Path, damage: str) -> None:
    expected = load(GOOD)
    [entry] = entries(cache)
    good = entry.read_bytes()
    damaged = {"garbage": b"\x00not an entry" * 50, "truncated": good[: len(good) // 2],
               "one byte flipped": good[:-100] + bytes([good[-100] ^ 0x01]) + good[-99:], "empty": b""}[damage]
    entry.write_bytes(damaged)
    assert load(GOOD) == expected
    assert entry.read_bytes() == good


def test_an_unusable_cache_directory_means_a_plain_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_dir))
    assert load(GOOD) == load(GOOD)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(not_a_dir))
    assert load(GOOD).sessions
    assert not Path("relative").exists()


def test_a_directory_others_can_write_to_is_not_used(cache: Path) -> None:
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    load(GOOD)
    assert entries(cache) == []
    cache.chmod(0o755)  # readable by others, writable only by its owner: tightened, then used
    load(GOOD)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and len(entries(cache)) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_another_users_directory_is_not_used(cache: Path) -> None:
    load(GOOD)
    [entry] = entries(cache)
    entry.write_bytes(b"")
    os.chown(cache, 65534, 65534)
    try:
        assert load(GOOD).sessions
        assert entry.read_bytes() == b""  # neither read nor rewritten
    finally:
        os.chown(cache, os.getuid(), os.getgid())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_cache_directory_means_a_plain_load(cache: Path) -> None:
    cache.mkdir(parents=True, mode=0o700)
    cache.chmod(0o500)
    try:
        assert load(GOOD) == load(GOOD)
        assert entries(cache) == []
    finally:
        cache.chmod(0o700)


def test_data_the_cache_cannot_hold_still_loads(cache: Path, tmp_path: Path) -> None:
    path = copy_of(GOOD, tmp_path)
    text = path.read_text(encoding="utf-8").replace("recorded_at: '2026-01-01T12:00:00Z'",
                                                    "recorded_at: 2026-01-01 12:00:00", 1)
    path.write_text(text, encoding="utf-8")
    for _ in range(2):
        assert load(path).metadata["recorded_at"] == datetime.datetime(2026, 1, 1, 12, 0)
    assert entries(cache) == []
