"""Where bundled cassettes live, and how a name on the command line becomes a file."""

from __future__ import annotations

from pathlib import Path

from replay.cassette import Cassette, CassetteError, load

_HERE = Path(__file__).resolve().parent


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
    """The default `check` corpus: the synthesized cassettes, whose audio has its real length.

    The imported captures are replayable and linted, but their audio was cut to 32 bytes per
    delta at the source, so a mid-audio cut would judge against milliseconds that never existed.
    """
    loaded = [(path, load(path)) for path in bundled()]
    chosen = [(path, cassette) for path, cassette in loaded if cassette.metadata.get("origin") == "synthesized"]
    if not chosen:
        raise CassetteError(f"no synthesized cassette in {bundled_dir()}: the conformance corpus is missing")
    return chosen
