"""A per-user cache of parsed cassettes, keyed by the file's content hash.

Parsing YAML costs 200-800 ms per MB (PyYAML builds a Python node for every scalar); reading the
same data back from ``marshal`` costs a few ms per MB. An entry is found by the SHA-256 of the
cassette's bytes and of the loader's own code, so an edited cassette, or a changed loader, is never
served from an old entry: it simply has no entry yet.

Entries live in ``$XDG_CACHE_HOME/rtreplay`` (or ``~/.cache/rtreplay``), a directory of mode 0700
that must belong to the user and be writable by nobody else; otherwise the cache is not used. Every
failure (no home, a read-only or foreign directory, a corrupt or truncated entry, data marshal cannot
hold) means a plain parse, never an error. Entries are written to a temporary file and renamed, carry
their key, length and CRC-32, and are checked on every read.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import stat
import struct
import sys
import tempfile
import zlib
from typing import Any

MAGIC = b"rtreplay-cassette\x01"
_HEADER = struct.Struct("<32sQI")  # key (sha256 digest), payload length, payload crc32
SUFFIX = ".cassette"
MAX_ENTRIES = 256  # beyond this, the entries written longest ago are removed


def cache_dir(*, create: bool) -> str | None:
    """The user's cache directory, or None when it cannot be used safely (missing, foreign, shared)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative path
        base = os.path.join(os.path.expanduser("~"), ".cache")  # "~" stays "~" when there is no home
        if not os.path.isabs(base):
            return None
    directory = os.path.join(base, "rtreplay")
    try:
        if create:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return None  # someone else could plant entries in it
        if st.st_mode & 0o077:
            os.chmod(directory, 0o700)  # readable by others: cassettes may hold what a user would not share
    except OSError:
        return None
    return directory


def read_bytes(path: str) -> bytes:
    """A whole file, with fewer system calls than `Path.read_bytes` (a hit reads two files: a fixed cost)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, os.fstat(fd).st_size + 1)]
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 20))
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)


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
        directory = cache_dir(create=False)
        if directory is None:
            return None
        try:
            blob = read_bytes(os.path.join(directory, key.hex() + SUFFIX))
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
        except (ValueError, EOFError, TypeError):
            return None

    def put(self, key: bytes, payload: Any) -> None:
        """Store ``payload`` (plain data: dicts, lists, tuples, strings, numbers, bytes, None); never raises."""
        try:
            data = marshal.dumps(_share_strings(payload, {}))
        except (ValueError, RecursionError):  # a type marshal cannot hold (a YAML timestamp), or too deep
            return
        directory = cache_dir(create=True)
        if directory is None:
            return
        blob = MAGIC + _HEADER.pack(key, len(data), zlib.crc32(data)) + data
        try:
            _write_atomic(os.path.join(directory, key.hex() + SUFFIX), blob)
            _prune(directory)
        except OSError:
            return


def _share_strings(value: Any, seen: dict[Any, Any]) -> Any:
    """Equal strings become one object, so marshal writes each once and loading allocates each once.

    Keys are interned as well: a loaded event's ``"type"`` lookups then compare pointers.
    """
    if isinstance(value, str):
        return seen.setdefault(value, value)
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: _share_strings(v, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_share_strings(v, seen) for v in value]
    if isinstance(value, tuple):
        return tuple(_share_strings(v, seen) for v in value)
    return value


def _write_atomic(path: str, blob: bytes) -> None:
    """A reader sees a whole entry or none (temp file + rename); mkstemp's mode 0600 is kept."""
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _prune(directory: str) -> None:
    """Keep the newest MAX_ENTRIES entries: the cache stays bounded however many cassettes come and go."""
    with os.scandir(directory) as it:
        entries = [e for e in it if e.name.endswith(SUFFIX)]
    if len(entries) <= MAX_ENTRIES:
        return

    def written(entry: os.DirEntry[str]) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:
            return 0.0

    for stale in sorted(entries, key=written)[: len(entries) - MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            os.unlink(stale.path)
