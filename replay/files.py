"""Reading and writing the project's files: one clear line for a file that cannot be read, and
writes that a crash can never leave half done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def read_text(path: Path, kind: str, error: type[ValueError], *, encoding: str = "utf-8") -> str:
    """The file's text, or ``error`` naming the file and what is wrong (``kind``: "a cassette is YAML")."""
    noun = kind.split(" is ")[0].removeprefix("a ").removeprefix("an ")
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise error(f"{path}: no such {noun} file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {noun}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8; {kind})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None


def write_atomic(path: Path, text: str) -> None:
    """A reader sees the old file or the new one, never half of either (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600; a cassette or report is an ordinary file (or keeps the mode it had).
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
