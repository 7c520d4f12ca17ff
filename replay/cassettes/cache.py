"""A per-user cache of parsed cassettes, keyed by the file's content hash.

Parsing YAML costs 200-800 ms per MB (PyYAML builds a Python node for every scalar); reading the
same data back from ``marshal`` costs a few ms per MB. An entry is found by the SHA-256 of the
cassette's bytes and of the loader's own code, so an edited cassette, or a changed loader, is never
served from an old entry: it simply has no entry yet.

Entries live in ``$XDG_CACHE_HOME/rtreplay`` (or ``$HOME/.cache/rtreplay``), a directory of mode
0700 that must be a real directory (not a symlink), belong to the user and be writable by nobody
else; otherwise the cache is not used. An empty or relative ``$XDG_CACHE_HOME`` is ignored, as the
XDG spec says; an empty, relative or root (``/``) ``$HOME`` means no cache at all, never a directory
at the top of the file system. A write opens the directory (``O_NOFOLLOW``), checks it through that
handle and creates, renames and prunes entries relative to it; a read checks the directory with
``lstat`` and opens its entry ``O_NOFOLLOW``. A symlink planted as the directory or as an entry is
never followed (a directory swapped between a read's two calls is at worst a miss: every entry is
checked). Every failure (no home, a read-only or foreign directory, a corrupt,
truncated or hostile entry, data marshal cannot hold) means a plain parse, never an error. Entries
are written to a temporary file and renamed, carry their key, length and CRC-32, and are checked on
every read.

A cassette itself is read with `replay.files.read_bytes`, at most `MAX_FILE_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import secrets
import stat
import struct
import sys
import zlib
from typing import Any

from replay.files import read_bytes

MAGIC = b"rtreplay-cassette\x01"
_HEADER = struct.Struct("<32sQI")  # key (sha256 digest), payload length, payload crc32
SUFFIX = ".cassette"
MAX_ENTRIES = 256  # beyond this, the entries written longest ago are removed
MAX_ENTRY_BYTES = 512 * 1024 * 1024  # an entry of a cassette of MAX_FILE_BYTES is smaller than this


MAX_FILE_BYTES = 256 * 1024 * 1024  # a cassette: bundled ones are KBs, a 60-minute session with audio tens of MBs


def _home() -> str | None:
    """The user's home as an absolute path below the root, or None (unset and unknown, empty, relative, "/")."""
    home = os.environ.get("HOME")
    if home is None:
        home = os.path.expanduser("~")
    return home if home.startswith("/") and home.strip("/") else None


def _directory() -> str | None:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative (or empty) path
        home = _home()
        if home is None:
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "rtreplay")


def _open_dir(*, create: bool) -> int | None:
    """A descriptor of the cache directory, checked: a real directory, the user's, writable by nobody else."""
    directory = _directory()
    if directory is None:
        return None
    try:
        if create:
            with contextlib.suppress(FileExistsError):
                os.makedirs(directory, mode=0o700)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # missing, a symlink (ELOOP), not a directory, not ours to read
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise OSError("someone else could plant entries in it")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)  # readable by others: cassettes may hold what a user would not share
    except OSError:
        os.close(fd)
        return None
    return fd


class ParsedCache:
    """Parsed data by content hash. ``salt`` is the loader's identity: another salt, other entries."""

    def __init__(self, salt: bytes) -> None:
        tag = b"\0".join([MAGIC, sys.implementation.cache_tag.encode(), str(marshal.version).encode(), salt])
        self._seed = hashlib.sha256(tag)

    def key(self, raw: bytes) -> bytes:
        digest = self._seed.copy()
        digest.update(raw)
        return digest.digest()

    def get(self, key: bytes) -> Any | None:
        """The payload stored under ``key``, or None: absent, unreadable or not exactly what was written."""
        directory = _directory()
        if directory is None:
            return None
        try:  # a hit costs what it did before: one lstat, one open (a swapped directory gives a miss at worst)
            st = os.lstat(directory)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
                return None
            blob = read_bytes(os.path.join(directory, key.hex() + SUFFIX), limit=MAX_ENTRY_BYTES, follow=False)
        except OSError:
            return None
        head = len(MAGIC) + _HEADER.size
        if not blob.startswith(MAGIC) or len(blob) < head:
            return None
        stored_key, length, crc = _HEADER.unpack_from(blob, len(MAGIC))
        payload = memoryview(blob)[head:]
        if stored_key != key or len(payload) != length or zlib.crc32(payload) != crc:
            return None
        try:
            return marshal.loads(payload)  # noqa: S302 - our own entry: key, length and CRC-32 checked
        except (ValueError, EOFError, TypeError, MemoryError, RecursionError):  # a hostile entry is a miss too
            return None

    def put(self, key: bytes, payload: Any) -> None:
        """Store ``payload`` (plain data: dicts, lists, tuples, strings, numbers, bytes, None); never raises."""
        try:
            data = marshal.dumps(_share_strings(payload, {}, {}))
        except (ValueError, RecursionError):  # a type marshal cannot hold (a YAML timestamp), or too deep
            return
        if len(data) > MAX_ENTRY_BYTES:
            return
        fd = _open_dir(create=True)
        if fd is None:
            return
        blob = MAGIC + _HEADER.pack(key, len(data), zlib.crc32(data)) + data
        try:
            _write_atomic(fd, key.hex() + SUFFIX, blob)
            _prune(fd)
        except OSError:
            return
        finally:
            os.close(fd)


def _share_strings(value: Any, seen: dict[Any, Any], done: dict[int, Any]) -> Any:
    """Equal strings become one object, so marshal writes each once and loading allocates each once.

    Keys are interned as well: a loaded event's ``"type"`` lookups then compare pointers. A container
    met again (a YAML alias) stays one object (``done``, by the id of the original, which the caller's
    payload keeps alive), so marshal writes it once, by reference: an alias is never expanded into copies.
    """
    kind = type(value)
    if kind is str:
        return seen.setdefault(value, value)
    if kind is dict or kind is list or kind is tuple:
        copy = done.get(id(value))
        if copy is not None:
            return copy
        if kind is dict:
            copy = {sys.intern(k) if type(k) is str else k: _share_strings(v, seen, done) for k, v in value.items()}
        elif kind is list:
            copy = [_share_strings(v, seen, done) for v in value]
        else:
            copy = tuple(_share_strings(v, seen, done) for v in value)
        done[id(value)] = copy
        return copy
    return value


def _write_atomic(dir_fd: int, name: str, blob: bytes) -> None:
    """A reader sees a whole entry or none (temp file + rename), both relative to the checked directory."""
    tmp = f".{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _prune(dir_fd: int) -> None:
    """Keep the newest MAX_ENTRIES entries: the cache stays bounded however many cassettes come and go."""
    with os.scandir(dir_fd) as it:
        entries = [e for e in it if e.name.endswith(SUFFIX)]
    if len(entries) <= MAX_ENTRIES:
        return

    def written(entry: os.DirEntry[str]) -> float:
        try:
            return entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            return 0.0

    for stale in sorted(entries, key=written)[: len(entries) - MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            os.unlink(stale.name, dir_fd=dir_fd)
