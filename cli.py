"""The `rtreplay` command line: a thin Typer shell over the `replay` library."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from replay import __version__
from replay.cassette import CassetteError, load
from replay.corpus import resolve_cassette
from replay.rules import RuleBook, RuleConfigError

app = typer.Typer(
    name="rtreplay",
    help="Replay recorded OpenAI Realtime sessions and check how clients handle barge-in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def clear_errors() -> Iterator[None]:
    """Bad input becomes one line on stderr and exit 2, never a traceback."""
    try:
        yield
    except (CassetteError, RuleConfigError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{getattr(exc, 'filename', None) or ''}: {exc.strerror or exc}".lstrip(": "))


def _version(value: bool) -> None:
    if value:
        console.print(f"rtreplay {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """rtreplay: record, replay and check OpenAI Realtime clients."""


@app.command()
def serve(
    cassette: Annotated[str, typer.Argument(help="Cassette file, or the name of a bundled one.")],
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1; 0 picks a free one.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    speed: Annotated[float, typer.Option(help="Timing factor: 1 as recorded, 0 as fast as possible.")] = 1.0,
    strict: Annotated[bool, typer.Option("--strict/--lenient",
                                         help="Fail a session whose client diverges from the recording.")] = False,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Refuse any other key, as the real server "
                                                "does (default: any non-empty key).")] = None,
    session: Annotated[int | None, typer.Option(help="Replay this WebSocket session of the cassette for every "
                                                "connection (default: the Nth connection gets the Nth).")] = None,
    rules: Annotated[Path | None, typer.Option(help="JSON file overriding unverified error messages.")] = None,
) -> None:
    """Serve a cassette as a Realtime API on ws://HOST:PORT/v1/realtime."""
    from replay.server import ReplayServer, ServerOptions, serve_forever

    with clear_errors():
        if speed < 0:
            raise ValueError("--speed must be >= 0")
        loaded = load(resolve_cassette(cassette))
        if session is not None and not 0 <= session < len(loaded.sessions):
            raise ValueError(f"--session {session}: the cassette has {len(loaded.sessions)} WebSocket session(s)")
        options = ServerOptions(speed=speed, strict=strict, api_key=api_key, session_index=session,
                                rules=RuleBook.from_file(rules) if rules else RuleBook())
        server = ReplayServer(loaded, options, host=host, port=port)

    def ready(srv: ReplayServer) -> None:
        console.print(f"[bold]rtreplay[/] serving [cyan]{loaded.name}[/] "
                      f"({len(loaded.sessions)} session(s), speed {speed}, {'strict' if strict else 'lenient'})")
        console.print(f"  WebSocket: {srv.ws_url()}")
        console.print(f"  export OPENAI_BASE_URL={srv.http_base_url}")
        console.print("  Ctrl-C to stop.")

    try:
        asyncio.run(serve_forever(server, ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command()
def show(
    cassette: Annotated[str, typer.Argument(help="Cassette file, or the name of a bundled one.")],
    session: Annotated[int | None, typer.Option(help="Only this WebSocket session.")] = None,
) -> None:
    """Print a cassette as a timeline: time, direction, type, key fields, audio as ms."""
    from replay.render import timeline

    with clear_errors():
        loaded = load(resolve_cassette(cassette))
    meta = loaded.metadata
    console.print(f"[bold]{loaded.name}[/]  origin={meta.get('origin')}  source={meta.get('source')}  "
                  f"license={meta.get('license')}  complete={meta.get('complete')}", highlight=False)
    indexes = [session] if session is not None else list(range(len(loaded.sessions)))
    for index in indexes:
        if not 0 <= index < len(loaded.sessions):
            fail(f"--session {index}: the cassette has {len(loaded.sessions)} WebSocket session(s)")
        console.print(timeline(loaded, index))
    for interaction in loaded.http_interactions:
        request, response = interaction["request"], interaction["response"]
        console.print(f"HTTP {request['method']} {request['uri']} → {response['status']['code']}")


@app.command()
def lint(
    cassettes: Annotated[list[str], typer.Argument(help="Cassette files or bundled names.")],
    secrets: Annotated[bool, typer.Option("--secrets", help="Also fail on anything shaped like a secret.")] = False,
) -> None:
    """Replay recorded client frames through the rules beside the recorded server frames; exit 1 on findings."""
    from replay.lint import lint_cassette

    total = 0
    for name in cassettes:
        with clear_errors():
            loaded = load(resolve_cassette(name))
        findings = [str(f) for f in lint_cassette(loaded)]
        if secrets:
            from replay.scrub import find_secrets

            findings += [f"{loaded.name}: [secret] {hit}" for hit in find_secrets(loaded)]
        for finding in findings:
            console.print(finding, highlight=False)
        total += len(findings)
        if not findings:
            console.print(f"[green]ok[/] {loaded.name}", highlight=False)
    if total:
        console.print(f"[red]{total} finding(s)[/]")
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
