"""The cache directory's permission checks, one mode bit at a time (issue 20, planted #3).

Someone who can write to the cache directory can plant an entry that a later load trusts, so a
directory writable by the group or by others is never used; one readable by them is tightened
to 0700 and used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from replay.cassettes import cache
from replay.cassettes.cassette import load

from .conftest import CASSETTES

GOOD = CASSETTES / "ga_text_turn_audio_response.yaml"


def cache_dir(*, create: bool) -> str | None:
    """The cache directory the loader would use (its checked descriptor's path), or None when it refuses one."""
    fd = cache._open_dir(create=create)
    if fd is None:
        return None
    os.close(fd)
    return cache._directory()


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "xdg" / "rtreplay"
    path.mkdir(parents=True)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def entries(path: Path) -> list[Path]:
    return sorted(path.glob("*.cassette"))


@pytest.mark.parametrize("bits", [0o770, 0o720, 0o730, 0o760, 0o775], ids=oct)
def test_a_group_writable_cache_directory_is_refused(directory: Path, bits: int) -> None:
    """Planted #3 (`st_mode & 0o022` weakened to `& 0o002`): group-writable means not used, not tightened."""
    directory.chmod(bits)
    assert cache_dir(create=False) is None
    assert cache_dir(create=True) is None
    load(GOOD)
    assert entries(directory) == []
    assert mode(directory) == bits  # left as it is: not ours to fix silently


@pytest.mark.parametrize("bits", [0o702, 0o703, 0o706, 0o707, 0o777], ids=oct)
def test_a_world_writable_cache_directory_is_refused(directory: Path, bits: int) -> None:
    """Planted #3's other half: a directory writable by others is never used."""
    directory.chmod(bits)
    assert cache_dir(create=True) is None
    load(GOOD)
    assert entries(directory) == []


def test_an_owner_only_cache_directory_is_used(directory: Path) -> None:
    """The good case the checks must not refuse: 0700, owned by the user, gets an entry, and a hit reads it."""
    directory.chmod(0o700)
    assert cache_dir(create=False) == str(directory)
    first = load(GOOD)
    [entry] = entries(directory)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert load(GOOD) == first


@pytest.mark.parametrize("bits", [0o740, 0o750, 0o704, 0o705, 0o755, 0o744], ids=oct)
def test_a_directory_others_can_only_read_is_tightened_then_used(directory: Path, bits: int) -> None:
    """Readable (not writable) by group or others: chmod 0700, then used."""
    directory.chmod(bits)
    assert cache_dir(create=False) == str(directory)
    assert mode(directory) == 0o700


def test_a_missing_directory_is_made_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """create=True makes the directory 0700 (whatever the umask); create=False does not make it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(create=False) is None
    old = os.umask(0)
    try:
        made = cache_dir(create=True)
    finally:
        os.umask(old)
    assert made == str(tmp_path / "xdg" / "rtreplay")
    assert mode(Path(made)) == 0o700


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a directory: not used (and no error)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "rtreplay").write_text("")
    (tmp_path / "rtreplay").chmod(0o600)
    assert cache_dir(create=True) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_another_users_owner_only_directory_is_refused(directory: Path) -> None:
    """Mode 0700 is not enough: it must be the user's own."""
    directory.chmod(0o700)
    os.chown(directory, 65534, 65534)
    try:
        assert cache_dir(create=True) is None
    finally:
        os.chown(directory, os.getuid(), os.getgid())


def test_a_relative_xdg_cache_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The XDG spec: a relative XDG_CACHE_HOME is ignored for ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir(create=True) == str(tmp_path / ".cache" / "rtreplay")
