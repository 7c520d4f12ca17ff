"""Where bundled cassettes live, and how a name on the command line becomes a file."""

from __future__ import annotations

from pathlib import Path

from replay.cassettes.cassette import Cassette, CassetteError, load

_HERE = Path(__file__).resolve().parents[1]  # replay/, where a wheel puts bundled_cassettes


def bundled_dir() -> Path:
    """The cassettes shipped with the package (installed wheel) or beside it (a checkout)."""
    for candidate in (_HERE / "bundled_cassettes", _HERE.parent / "cassettes"):
        if candidate.is_dir():
            return candidate
    raise CassetteError("the bundled cassettes are missing from this installation")


def bundled() -> list[Path]:
    return sorted(bundled_dir().glob("*.yaml"))


def resolve_cassette(name: str | Path) -> Path:
    """A path as given if it exists, else a bundled cassette by file name or stem."""
    path = Path(name)
    if path.exists():
        return path
    if path.parent == Path("."):
        for candidate in (bundled_dir() / path.name, bundled_dir() / f"{path.name}.yaml"):
            if candidate.exists():
                return candidate
    names = ", ".join(p.stem for p in bundled()) or "none"
    raise CassetteError(f"{name}: no such file, and no bundled cassette of that name (bundled: {names})")


def conformance_corpus() -> list[tuple[Path, Cassette]]:
    """The default `check` corpus, in the order of `conformance.txt` (append-only, so ids stay put)."""
    manifest = bundled_dir() / "conformance.txt"
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CassetteError(f"{manifest}: cannot read the conformance corpus list: {exc.strerror}") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise CassetteError(f"{manifest}: lists no cassette")
    corpus = []
    for name in names:
        path = bundled_dir() / f"{name}.yaml"
        if not path.exists():
            raise CassetteError(f"{manifest}: lists {name}, but {path.name} is not bundled")
        corpus.append((path, load(path)))
    return corpus
