"""Reading and writing the project's files: one clear line for a file that cannot be read, and
writes that a crash can never leave half done."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

# The most `read_text` reads: far above any baseline, trace or compact-audio cassette (kilobytes to a few
# megabytes; full audio is 64 kB of base64 a second, so about 17 minutes of it), and low enough that a
# file nobody meant to give us cannot take a CI runner's memory.
READ_LIMIT = 64 * 1024 * 1024


def read_text(path: Path, kind: str, error: type[ValueError], *, encoding: str = "utf-8",
              limit: int = READ_LIMIT) -> str:
    """The file's text, or ``error`` naming the file and what is wrong (``kind``: "a cassette is YAML").

    Only a regular file is read (a FIFO would hang, ``/dev/zero`` never ends), and at most ``limit`` bytes.
    """
    noun = kind.split(" is ")[0].removeprefix("a ").removeprefix("an ")
    try:
        data = read_bytes(path, limit=limit)
    except FileNotFoundError:
        raise error(f"{path}: no such {noun if noun.endswith(' file') else noun + ' file'}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {noun}") from None
    except NotAFile as exc:
        if exc.errno == errno.EISDIR:
            raise error(f"{path}: is a directory, not a {noun}") from None
        if exc.errno == errno.EFBIG:
            raise error(f"{path}: larger than {limit // (1024 * 1024)} MiB, more than any {noun} rtreplay "
                        "reads") from None
        raise error(f"{path}: not a regular file (a device, a FIFO or a socket); a {noun} is a file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8; {kind})") from None


class NotAFile(OSError):
    """A path that is not a regular file of a size we read: ``strerror`` says which."""


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)  # a FIFO opens at once


def read_bytes(path: str | os.PathLike[str], *, limit: int, dir_fd: int | None = None,
               follow: bool = True) -> bytes:
    """A whole regular file of at most ``limit`` bytes, with few system calls (a cache hit reads two files).

    Anything else raises `NotAFile` before a byte is read: a FIFO would block, ``/dev/zero`` never ends.
    """
    fd = os.open(path, _OPEN_FLAGS | (0 if follow else os.O_NOFOLLOW), dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
            raise NotAFile(code, f"not a regular file ({_kind(st.st_mode)})", str(path))
        if st.st_size > limit:
            raise NotAFile(errno.EFBIG, f"{st.st_size} bytes, more than the {_size(limit)} a file may be here",
                           str(path))
        chunks = [os.read(fd, st.st_size + 1)]
        total = len(chunks[0])
        while chunks[-1]:  # a file that grows while it is read: still no more than the limit
            if total > limit:
                raise NotAFile(errno.EFBIG, f"more than the {_size(limit)} a file may be here", str(path))
            chunks.append(os.read(fd, 1 << 20))
            total += len(chunks[-1])
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 2 else b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def write_atomic(path: Path, text: str, *, errors: str = "strict") -> None:
    """A reader sees the old file or the new one, never half of either (temp file + rename).

    ``errors``: how a character UTF-8 cannot hold (a lone surrogate) is written; a report passes
    ``"backslashreplace"``, which in a JSON string is the same character's escape. An error names
    ``path``, never the temp file. Temp files of this target that an earlier, killed write left
    behind are removed.
    """
    try:
        if path.exists() and not path.is_file():
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory")
            raise FileExistsError(errno.EEXIST, "exists and is not a regular file (a device, a FIFO?)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        _sweep_stale_temps(path, Path(tmp))
        # mkstemp makes 0600; a cassette or report is an ordinary file (or keeps the mode it had).
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", errors=errors) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sweep_stale_temps(path: Path, current: Path) -> None:
    """Remove ``.{name}.XXXXXXXX.tmp`` files of ``path`` that are ours and older than ``current``.

    Only what `write_atomic` itself names so (mkstemp's 8 characters), only regular files, only the
    running user's: a temp file of someone else's write, or of a concurrent one, is never touched.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    with contextlib.suppress(OSError):
        now = current.stat().st_mtime_ns
        for entry in os.scandir(path.parent):
            if entry.name == current.name or not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mtime_ns < now:
                    os.unlink(entry.path)
