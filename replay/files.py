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
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; a regular file ignores it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such {noun if noun.endswith(' file') else noun + ' file'}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {noun}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise error(f"{path}: is a directory, not a {noun}")
        raise error(f"{path}: not a regular file (a device, a FIFO or a socket); a {noun} is a file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{path}: larger than {limit // (1024 * 1024)} MiB, more than any {noun} rtreplay reads")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8; {kind})") from None


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
