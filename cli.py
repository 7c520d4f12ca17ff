"""The `rtreplay` command line: a thin Typer shell over the `replay` library."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

from replay import __version__
from replay.cassettes.cassette import CassetteError, load
from replay.cassettes.corpus import resolve_cassette
from replay.clients.command import CONNECT_TIMEOUT, EXIT_GRACE, TERM_GRACE, CommandClient
from replay.text import visible
from replay.wire.rules import RuleBook, RuleConfigError

if TYPE_CHECKING:
    from typer import _click as click  # typer 0.29 vendors click

    from replay.clients.base import Client
    from replay.conformance.cuts import Case
    from replay.conformance.runner import CassetteCache, RunOptions, RunReport


class _Usage:
    """Help as a CLI's reads: a flag takes no value, so it shows none (rich help would say ``<bool>``), and a
    required argument is its plain name (``CASSETTE``, not ``{CASSETTE}``)."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params: list[click.Parameter] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif isinstance(param, TyperArgument):  # its metavar names it: no ``<str>`` beside the name
                param.display_type_rich = _no_type  # type: ignore[method-assign]
        return params

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        return [re.sub(r"^\{(.+)\}", r"\1", piece) for piece in pieces]


def _no_type(ctx: click.Context) -> None:
    return None


class _Command(_Usage, TyperCommand):
    pass


class _Group(_Usage, TyperGroup):
    pass


app = typer.Typer(
    name="rtreplay",
    cls=_Group,
    help="Replay recorded OpenAI Realtime sessions and check how clients handle barge-in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# User data (a case glob, a cut, a command) is printed as it is: never an emoji, never highlighted.
console = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)
# The runner's bounds, said in --help (tests/test_cli.py checks them against RunOptions).
WINDOW_S = 5.0
CASE_TIMEOUT_S = 30.0
STALL_S = 3.0
PREFLIGHT_LINES = 20  # of a program's output, when it never connected


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(visible(message))}", soft_wrap=True)
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


@app.command(cls=_Command)
def serve(
    cassette: Annotated[str, typer.Argument(metavar="CASSETTE", help="Cassette file, or the name of a bundled one.")],
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port, 0 to 65535; 0 picks a free one.")] = 8765,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to bind. Beyond loopback (0.0.0.0, ::, a LAN "
                                                           "address) it needs --api-key, or "
                                                           "--insecure-any-key.")] = "127.0.0.1",
    speed: Annotated[float, typer.Option(metavar="FACTOR", help="Timing factor: 1 as recorded, 0 as fast as "
                                         "possible.")] = 1.0,
    strict: Annotated[bool, typer.Option("--strict", help="Fail a session whose client diverges from the "
                                         "recording (default: lenient).")] = False,
    api_key: Annotated[str | None, typer.Option("--api-key", metavar="KEY",
                                                help="Refuse any other key, on the WebSocket and over HTTP, as the "
                                                     "real server does (default: any non-empty key on the WebSocket, "
                                                     "none checked over HTTP).")] = None,
    insecure_any_key: Annotated[bool, typer.Option("--insecure-any-key",
                                                   help="With a --host beyond loopback and no --api-key: serve anyone "
                                                        "who can reach the port, whatever key they send.")] = False,
    session: Annotated[int | None, typer.Option(metavar="N", help="Replay this WebSocket session of the cassette "
                                                "for every connection (default: the Nth connection gets the "
                                                "Nth).")] = None,
    rules: Annotated[Path | None, typer.Option(metavar="PATH", help="JSON file overriding unverified error "
                                               "messages.")] = None,
    reject_beta: Annotated[bool, typer.Option("--reject-beta", help="Refuse the beta header as the real API "
                                              "has since the beta's retirement (close 4000).")] = False,
    max_session_minutes: Annotated[float, typer.Option(metavar="MIN", help="Then session_expired and close "
                                                       "1001, as the real API.")] = 60.0,
    play_user: Annotated[bool, typer.Option("--play-user", help="Speak the recorded user turns on the recorded "
                                            "timeline, whatever audio the client appends (default: a voice turn "
                                            "is heard once the client has appended that much audio).")] = False,
    latency: Annotated[float, typer.Option("--latency", metavar="MS", help="Every frame reaches the client this "
                                           "many ms late, as over a network, and a cancel takes twice as "
                                           "long.")] = 0.0,
) -> None:
    """Serve a cassette as a Realtime API on ws://HOST:PORT/v1/realtime.

    Ctrl-C or SIGTERM closes the live sessions with 1001 (going away) and exits 0.
    """
    from replay.net.server import ReplayServer, ServerOptions, exposure, serve_forever, url_host

    with clear_errors():
        _port(port)
        if speed < 0 or max_session_minutes <= 0 or not 0 <= latency < float("inf"):
            raise ValueError("--speed and --latency must be >= 0, and --max-session-minutes > 0")
        exposed = exposure(host)
        if exposed is not None and api_key is None and not insecure_any_key:
            raise ValueError(f"--host {host} serves {exposed}, and without --api-key any key is accepted: "
                             "set --api-key KEY, or pass --insecure-any-key to serve anyone who can reach it")
        loaded = load(resolve_cassette(cassette))
        if session is not None and not 0 <= session < len(loaded.sessions):
            raise ValueError(f"--session {session}: the cassette has {len(loaded.sessions)} WebSocket session(s)")
        options = ServerOptions(speed=speed, strict=strict, api_key=api_key, session_index=session,
                                rules=RuleBook.from_file(rules) if rules else RuleBook(), reject_beta=reject_beta,
                                max_session_s=max_session_minutes * 60, play_user=play_user, latency_ms=latency,
                                on_event=_say, finished_kept=0)
        server = ReplayServer(loaded, options, host=host, port=port)

    def ready(srv: ReplayServer) -> None:
        extras = "".join([", the user played on the recorded timeline" if play_user else "",
                          f", latency {latency:g} ms" if latency else ""])
        console.print(f"[bold]rtreplay[/] serving [cyan]{escape(visible(loaded.name))}[/] "
                      f"({len(loaded.sessions)} session(s), speed {speed:g}, {'strict' if strict else 'lenient'}"
                      f"{extras})")
        _say(f"  WebSocket: {srv.ws_url()}")
        _say(f"  export OPENAI_BASE_URL={srv.http_base_url}")
        _say_exposure(host, url_host(host), exposed, api_key is not None)
        for warning in srv.warnings():
            _say(f"  warning: {warning}")
        console.print("  Ctrl-C to stop. A line per connection and per divergence from the recording follows.")

    try:
        stopped_by, closed = asyncio.run(serve_forever(server, ready))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return
    except OSError as exc:
        fail(_listen_error(host, port, exc))
    _say(f"stopped ({stopped_by}): {closed} live session(s) closed with 1001 going away")


def _say_exposure(host: str, shown_host: str, exposed: str | None, keyed: bool) -> None:
    """`serve`'s note on a bind beyond loopback: who can connect, and which address the URLs above use."""
    if exposed is None:
        return
    who = "but only with the --api-key key" if keyed else "with any key"
    _say(f"  warning: --host {host} serves {exposed}: anyone who can reach the port can connect, {who}")
    if shown_host != host.strip("[]") and shown_host.strip("[]") != host.strip("[]"):
        _say(f"  (the URLs above use {shown_host}, this machine's loopback; from elsewhere, use this machine's "
             "address)")


def _port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: a TCP port is 0 to 65535 (0 picks a free one)")


def _listen_error(host: str, port: int, exc: OSError) -> str:
    import socket

    if isinstance(exc, socket.gaierror):  # a --host name that does not resolve
        return f"cannot listen on {host}:{port}: {exc.strerror or exc} (check --host)"
    why = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own strerror is a long sentence
    return f"cannot listen on {host}:{port}: {why} (choose another --port, or 0 for a free one)"


@app.command(cls=_Command)
def show(
    cassette: Annotated[str, typer.Argument(metavar="CASSETTE", help="Cassette file, or the name of a bundled one.")],
    session: Annotated[int | None, typer.Option(metavar="N", help="Only this WebSocket session.")] = None,
) -> None:
    """Print a cassette as a timeline: time, direction, type, key fields, audio as ms."""
    from replay.authoring.render import show as show_cassette

    with clear_errors():
        show_cassette(load(resolve_cassette(cassette)), console, session)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _report_path(path: Path, tags: list[str]) -> Path:
    """One client at one latency: the path as given; several: what tells them apart before the suffix."""
    if not tags:
        return path
    return path.with_name(f"{path.stem}.{'.'.join(map(_safe, tags))}{path.suffix}")


def _writable(option: str, path: Path, *, directory: bool = False) -> None:
    """Fail before the run, not after it, when a report could not be written where asked.

    Tried as the write will do it: a temp file made in the directory and removed at once. Directories
    that do not exist yet are made for the try and removed again (the write makes them), so a run that
    is refused leaves nothing behind. Errors name the user's path, never the probe.
    """
    import tempfile
    from contextlib import suppress

    where = f"{option} {path}"
    if directory:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{where}: exists and is not a directory")
        folder = path
    else:
        if path.is_dir():
            raise ValueError(f"{where}: is a directory; give a file name")
        if path.exists() and not path.is_file():
            raise ValueError(f"{where}: exists and is not a regular file (a device, a FIFO?); a report is "
                             "written as a file of its own")
        folder = path.parent
    chain = [folder, *folder.parents]
    first = next((i for i, p in enumerate(chain) if p.exists() or p.is_symlink()), len(chain))
    if first < len(chain) and not chain[first].is_dir():
        making = f"cannot create the directory {chain[first - 1]}: " if first else ""
        raise ValueError(f"{where}: {making}{chain[first]} is not a directory")
    missing, created = list(reversed(chain[:first])), []
    step = folder
    try:
        for step in missing:
            step.mkdir()
            created.append(step)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)  # swept if left
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        cannot = f"cannot create the directory {step}" if len(created) < len(missing) else f"cannot write in {folder}"
        raise ValueError(f"{where}: {cannot}: {exc.strerror or exc}") from None
    finally:
        for made in reversed(created):
            with suppress(OSError):
                made.rmdir()


def _latencies(spec: str | None) -> list[float]:
    """``50`` or a sweep ``0,50,200`` (milliseconds)."""
    if spec is None:
        return [0.0]
    values = []
    for part in spec.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--latency {spec}: {part.strip()!r} is not a number of milliseconds "
                             "(e.g. --latency 50, or --latency 0,50,200 to sweep)") from None
        if not 0 <= value < float("inf"):
            raise ValueError(f"--latency {spec}: {part.strip()} ms: a latency is a number of ms >= 0")
        values.append(value)
    return list(dict.fromkeys(values))


def _shard(spec: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if match is None:
        raise ValueError(f"--shard {spec}: a shard is K/N, e.g. --shard 1/4 (the first of 4)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {spec}: K/N needs 1 <= K <= N")
    return index, count


def _say(text: str) -> None:
    """A line that holds user data (a command, a path, a case id): never markup, never a control character."""
    console.print(visible(text), markup=False, soft_wrap=True)


def _reached_exit(report: RunReport, min_coverage: float | None) -> tuple[int, str | None]:
    """Exit 2 when no case was reached (nothing was checked), 1 when coverage is under --min-coverage."""
    from replay.conformance.reports import coverage

    reached, total = coverage(report)
    if total and not reached:
        return 2, (f"{report.client} reached none of its {total} case(s): it never took a conversation to the "
                   "barge-in (the reasons are above; --logs DIR keeps each case's wire log)")
    if min_coverage is not None and total and reached * 100 < min_coverage * total:
        return 1, (f"coverage {reached} of {total} cases reached ({100 * reached / total:.1f} %), under "
                   f"--min-coverage {min_coverage:g}")
    return 0, None


@app.command(cls=_Command)
def check(
    client: Annotated[list[str] | None, typer.Option("--client", metavar="NAME",
                                                     help="Client to check: reference-naive, reference-fixed, a "
                                                          "library (openai, livekit, livekit-pr6249, openai-agents, "
                                                          "pipecat and the others of README's Clients) or "
                                                          "package.module:ATTR. Repeatable.")] = None,
    cmd: Annotated[str | None, typer.Option("--cmd", metavar="COMMAND",
                                            help=f"A program in any language, started per case with OPENAI_BASE_URL, "
                                                 f"OPENAI_API_KEY, RTREPLAY_WS_URL, RTREPLAY_CASE. It must connect "
                                                 f"within {CONNECT_TIMEOUT:g} s (tried once before the sweep); after "
                                                 f"each case it gets {EXIT_GRACE:g} s to exit on its own, then "
                                                 f"SIGTERM, then SIGKILL {TERM_GRACE:g} s later.")] = None,
    cassette: Annotated[list[str] | None, typer.Option("--cassette", metavar="CASSETTE",
                                                       help="Cassette(s) to sweep (default: the bundled conformance "
                                                            "corpus).")] = None,
    case: Annotated[list[str] | None, typer.Option("--case", metavar="GLOB",
                                                   help="Only cases whose id matches this glob, e.g. 'RT-INT-*'. "
                                                        "Repeatable.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", metavar="K/N",
                                              help="Run shard K of N of the selected cases (K/N, e.g. 1/4), for a CI "
                                                   "matrix: the N shards run every case once.")] = None,
    cut: Annotated[list[str] | None, typer.Option("--cut", metavar="CUT",
                                                  help="Explicit cut(s): after:TYPE#N or at:SECONDS (instead of the "
                                                       "sweep).")] = None,
    all_cuts: Annotated[bool, typer.Option("--all-cuts", help="Every cut, not one per equivalent state.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="NON-STRICT verdicts fail the run too.")] = False,
    min_coverage: Annotated[float | None, typer.Option("--min-coverage", metavar="PCT",
                                                       help="Fail the run (exit 1) when fewer than PCT % of the "
                                                       "selected cases were reached (not NOT-REACHED).")] = None,
    latency: Annotated[str | None, typer.Option("--latency", metavar="MS",
                                                help="Every server frame reaches the client this many ms late, as over "
                                                     "a network, and a cancel takes twice as long; a comma list "
                                                     "(0,50,200) runs the selection once per value.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="PATH", help="Write a JSON report.")] = None,
    junit: Annotated[Path | None, typer.Option("--junit-xml", metavar="PATH",
                                                 help="Write JUnit XML (one testcase per case).")] = None,
    html: Annotated[Path | None, typer.Option("--html", metavar="PATH",
                                              help="Write a self-contained HTML report.")] = None,
    logs: Annotated[Path | None, typer.Option("--logs", metavar="DIR",
                                              help="Write each case's wire log (JSONL) here.")] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", metavar="PATH",
                                                  help="Known failures (JSON or one id per line): they do not fail the "
                                                       "run; a listed case that passes does.")] = None,
    write_baseline: Annotated[Path | None, typer.Option("--write-baseline", metavar="PATH",
                                                        help="Write the failing case ids here.")] = None,
    node_modules: Annotated[Path | None, typer.Option("--node-modules", metavar="DIR",
                                                      help="Where the JavaScript drivers find their packages (sets "
                                                           "RTREPLAY_NODE_MODULES).")] = None,
    speed: Annotated[float, typer.Option(metavar="FACTOR", help="Replay timing up to the cut: 1 = as recorded, "
                                         "0 = at once.")] = 1.0,
    concurrency: Annotated[int | None, typer.Option(metavar="N", help="Cases run at once (default 16; for --cmd, two "
                                                                      "per CPU core, so a loaded machine does not "
                                                                      "skew playback clocks).")] = None,
    tolerance_ms: Annotated[int, typer.Option(metavar="MS", help="Truncate vs playback estimate "
                                                                 "before it is noted.")] = 250,
    window_ms: Annotated[int, typer.Option(metavar="MS", help=f"After the barge-in, watch the client (at least 1 s, "
                                                              f"and while the user speaks and the response it starts "
                                                              f"plays) until this long without a frame other than "
                                                              f"audio (at most {WINDOW_S:g} s). Before the cut, a "
                                                              f"client silent for {STALL_S:g} s with nothing due is "
                                                              f"NOT-REACHED; a case gives up {CASE_TIMEOUT_S:g} s "
                                                              f"after it started.")] = 300,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the cases that are not OK, and the "
                                        "summary.")] = False,
    list_only: Annotated[bool, typer.Option("--list", help="List the cases and exit.")] = False,
) -> None:
    """Barge in at every point of the recorded responses and judge what the client sends.

    Ctrl-C, SIGTERM, SIGHUP: its programs end, the finished cases are reported as interrupted, exit 128+N.
    """
    from replay.cassettes.corpus import conformance_corpus
    from replay.clients.base import dialects_of
    from replay.conformance import reports
    from replay.conformance.cuts import CutError, build_cases, select
    from replay.conformance.cuts import shard as shard_of
    from replay.conformance.runner import CassetteCache, RunOptions, not_started

    with _stop_signals() as stop:
        stop.preparing = True  # nothing runs yet: a signal ends check where it is
        try:
            with clear_errors():
                if cmd is not None and not cmd.strip():
                    raise ValueError("--cmd is empty: name the program to check, e.g. --cmd 'python my_agent.py'")
                if concurrency is None:
                    concurrency = 2 * (os.cpu_count() or 2) if cmd is not None else 16
                if speed < 0 or concurrency < 1 or tolerance_ms < 0 or window_ms < 1:
                    raise ValueError("--speed, --tolerance-ms must be >= 0; --concurrency, --window-ms >= 1")
                if min_coverage is not None and not 0 <= min_coverage <= 100:
                    raise ValueError(f"--min-coverage {min_coverage:g}: a percentage, from 0 to 100")
                latencies = _latencies(latency)
                shard_spec = _shard(shard) if shard is not None else None
                if node_modules is not None:
                    if not node_modules.is_dir():
                        raise ValueError(f"--node-modules {node_modules}: not an existing directory")
                    os.environ["RTREPLAY_NODE_MODULES"] = str(node_modules.resolve())
                _outputs_writable({"--json": json_out, "--junit-xml": junit, "--html": html,
                                   "--write-baseline": write_baseline}, logs)
                loaded = [(path, load(path)) for path in map(resolve_cassette, cassette)] if cassette \
                    else conformance_corpus()
                try:
                    cases = select(build_cases(loaded, all_cuts=all_cuts, cuts=cut or ()), case or ())
                except CutError as exc:
                    fail(str(exc))
                if not cases:
                    fail(f"no case matches {' '.join(case or [])!r}" if case else
                         "the cassettes hold no response to cut")
                if shard_spec is not None:
                    selected = len(cases)
                    cases = shard_of(cases, *shard_spec)
                    if not cases:
                        fail(f"--shard {shard}: this shard of the {selected} selected case(s) is empty")
                known = reports.load_baseline(baseline) if baseline else None
            if list_only:
                for c in cases:
                    typer.echo(visible(f"{c.id:<12} {c.cassette_name:<30} {c.cut:<40} {c.title}"))
                return
            demo = not client and not cmd
            command = CommandClient(cmd) if cmd else None
            clients = ([command] if command else []) + _clients(["reference-naive", "reference-fixed"] if demo
                                                                else client or [])
        except _Interrupted:
            fail(f"interrupted by {stop.name} before any case ran: no report written", code=stop.exit_code)
        stop.preparing = False
        plan = []
        for checked in clients:
            spoken = dialects_of(checked)
            own = [c for c in cases if c.dialect in spoken]
            if not own:
                fail(f"nothing to run for {checked.name}: it speaks {'/'.join(spoken)} only, and the {len(cases)} "
                     "selected case(s) were recorded in another protocol generation")
            if len(own) < len(cases) and not quiet:
                _say(f"{checked.name} speaks {'/'.join(spoken)} only: {len(cases) - len(own)} case(s) recorded in "
                     "another protocol generation are not run for it.")
            plan.append((checked, own))
        if demo and not quiet:
            console.print("No client named: checking the two reference clients. reference-naive has the pre-fix "
                          "logic (it should FAIL before the first audio delta); reference-fixed has livekit/agents "
                          "PR #6249 (it should pass). The exit code is reference-fixed's. Pass --client or --cmd to "
                          "check yours.\n")
        cassettes = CassetteCache(loaded)  # parsed once above, to build the cases
        shard_label = f"shard {shard_spec[0]}/{shard_spec[1]}: " if shard_spec is not None else ""
        if command is not None:
            _preflight(command, plan[0][1][0], cassettes, stop)
        exit_code, reported = 0, False
        for checked, own in plan:
            for delay in latencies:
                note = f"latency {delay:g} ms" if len(latencies) > 1 or delay else None
                tags = ([checked.name] if len(plan) > 1 else []) + \
                    ([f"latency-{delay:g}ms"] if len(latencies) > 1 else [])
                if stop.signum is not None:  # interrupted before this run started
                    if reported:
                        _say(f"not run ({stop.name}): {checked.name}{f', {note}' if note else ''}")
                        continue
                    report = not_started(own, checked)  # in the preflight: every case of the first run unfinished
                    report.signal = stop.name
                else:
                    options = RunOptions(speed=speed, concurrency=concurrency, tolerance_ms=tolerance_ms,
                                         quiet=window_ms / 1000, latency_ms=delay)
                    report = _run_with_progress(checked, own, options, cassettes, stop)
                console.print(reports.ConsoleReport(report, quiet=quiet, note=note))
                _say(shard_label + reports.summary_line(report, note=note))
                _write_reports(report, tags, {"latency_ms": delay}, json_out=json_out, junit=junit, html=html,
                               logs=logs, write_baseline=write_baseline, strict=strict)
                reported = True
                gate = reports.gate(report, strict=strict, baseline=known)
                reached_code, problem = _reached_exit(report, min_coverage)
                if report.interrupted:
                    continue  # a partial run passes or fails nothing: the exit code is the signal's
                if problem is None or gate.exit_code:  # a PASS over cases nobody reached would mislead
                    _say(gate.message)
                if problem:
                    err.print(f"[bold red]error:[/] {escape(visible(problem))}" if reached_code == 2
                              else escape(visible(problem)), soft_wrap=True)
                if not demo or checked.name == "reference-fixed":
                    exit_code = max(exit_code, gate.exit_code, reached_code)
        if stop.signum is not None:
            err.print(f"[bold red]error:[/] {escape(f'stopped by {stop.name}')}: the programs it started are "
                      "ended; the reports asked for hold the cases that finished", soft_wrap=True)
            exit_code = stop.exit_code
    raise typer.Exit(exit_code)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_T = TypeVar("_T")


class _Interrupted(BaseException):
    """A stop signal while `check` prepares (nothing started yet); a BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` on the way turns it into another error."""


class _Stop:
    """SIGINT, SIGTERM and SIGHUP alike (a Ctrl-C, a CI job's cancel, a closed terminal).

    The first asks `check` to stop cleanly: the running cases are cancelled, which ends the programs and
    process groups their clients started, the finished cases go to every report asked for, and the exit
    code is 128 + the signal. A second, while stopping, ends it at once: every process group it started
    is killed, and it exits without writing.
    """

    def __init__(self) -> None:
        from replay.clients._support import kill_started_groups

        self.signum: int | None = None
        self.preparing = False
        self.installed = False  # the handlers are ours (not in a thread other than the main one)
        self.kill_started_groups = kill_started_groups  # imported now: never in a signal handler

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def handle(self, signum: int, _frame: object = None) -> None:
        """The handler outside an event loop: a signal while preparing raises, else it is noted for later."""
        self.note(signum)
        if self.preparing:
            raise _Interrupted

    def note(self, signum: int) -> None:
        if self.signum is not None:
            self.at_once(signum)
        self.signum = signum

    def at_once(self, signum: int) -> NoReturn:
        self.kill_started_groups()
        message = f"error: {signal.Signals(signum).name} while stopping: stopped at once, the programs it " \
            "started killed, no report written\n"
        try:
            os.write(2, message.encode())
        finally:
            os._exit(128 + signum)


@contextmanager
def _stop_signals() -> Iterator[_Stop]:
    """`_Stop`'s handlers for the length of a `check`; the ones before are put back after it."""
    import threading

    stop = _Stop()
    stop.installed = threading.current_thread() is threading.main_thread()  # only it can take signals
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if stop.installed else {}
    for sig in saved:
        signal.signal(sig, stop.handle)
    try:
        yield stop
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _in_loop(stop: _Stop, main: Callable[[asyncio.Event], Awaitable[_T]]) -> _T:
    """``asyncio.run(main(interrupt))``, a stop signal setting ``interrupt`` inside the loop.

    Its handlers are the loop's while it runs (a signal wakes it at once); `_Stop`'s are put back,
    with the signals blocked meanwhile, before the loop closes, so no signal ever finds the default
    handler (which for SIGTERM would kill us and leave the programs running)."""

    async def guarded() -> _T:
        loop = asyncio.get_running_loop()
        interrupt = asyncio.Event()

        def on_signal(signum: int) -> None:
            stop.note(signum)
            interrupt.set()

        if not stop.installed:
            return await main(interrupt)
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        if stop.signum is not None:  # came while the loop started
            interrupt.set()
        try:
            return await main(interrupt)
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                for sig in STOP_SIGNALS:
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, stop.handle)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    return asyncio.run(guarded())


def _outputs_writable(files: dict[str, Path | None], logs: Path | None) -> None:
    """Every output path can be written, and no two options name the same file."""
    seen: dict[Path, str] = {}
    for option, path in files.items():
        if path is None:
            continue
        _writable(option, path)
        key = path.resolve()
        if key in seen:
            raise ValueError(f"{seen[key]} and {option} both name {path}: give each report its own file")
        seen[key] = option
    if logs is not None:
        _writable("--logs", logs, directory=True)


def _write_reports(report: RunReport, tags: list[str], settings: dict[str, float], *, json_out: Path | None,
                   junit: Path | None, html: Path | None, logs: Path | None, write_baseline: Path | None,
                   strict: bool) -> None:
    """Each report asked for, announced as it is written.

    An interrupted run writes no baseline: one without the unfinished cases' failures would hide them
    in the next run."""
    from replay.conformance import reports

    if report.interrupted and write_baseline is not None:
        _say(f"not written: {_report_path(write_baseline, tags)} (the run was interrupted: a baseline of the "
             "finished cases only would forget the failures of the others)")
        write_baseline = None

    writers: list[tuple[Path | None, Callable[[Path], None]]] = [
        (json_out, lambda path: reports.write_json(report, path, settings=settings)),
        (junit, lambda path: reports.write_junit(report, path, strict=strict, settings=settings)),
        (html, lambda path: reports.write_html(report, path, settings=settings)),
        (write_baseline, lambda path: reports.write_baseline(report, path, strict=strict)),
    ]
    with clear_errors():
        for path, write in writers:
            if path is not None:
                target = _report_path(path, tags)
                write(target)
                _say(f"wrote {target}")
        if logs is not None:
            directory = logs.joinpath(*map(_safe, tags))
            written = reports.write_logs(report, directory)
            _say(f"wrote {len(written)} wire log(s) to {directory}")


def _preflight(command: CommandClient, case: Case, cassettes: CassetteCache, stop: _Stop) -> None:
    """The program connects at all, or one error with its output, before any case runs.

    A stop signal meanwhile ends the program; `check` then reports every case unfinished."""
    from contextlib import suppress

    from replay.conformance.preflight import PreflightFailed, preflight
    from replay.text import shown

    async def main(interrupt: asyncio.Event) -> None:
        trial = asyncio.create_task(preflight(command, case, cassettes.get(case.cassette)))
        waiter = asyncio.create_task(interrupt.wait())
        await asyncio.wait({trial, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not trial.done():
            trial.cancel()
        with suppress(asyncio.CancelledError):
            await trial

    try:
        _in_loop(stop, main)
    except PreflightFailed as exc:
        err.print(f"[bold red]error:[/] {escape(shown(f'--cmd {command.command!r}: {exc.message}'))}",
                  soft_wrap=True)
        tail = visible(exc.output.rstrip(), keep_newlines=True).splitlines()[-PREFLIGHT_LINES:]
        if tail:
            err.print(f"its output (last {len(tail)} line(s)):")
            err.print("\n".join(f"  {line}" for line in tail), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _clients(names: list[str]) -> list[Client]:
    """Clients by name, each asked its version first: a missing library says so before any case runs."""
    from replay.clients.base import MissingDependency
    from replay.clients.registry import UnknownClient, get_client

    try:
        clients = [get_client(name) for name in names]
        for checked in clients:
            checked.version()
    except UnknownClient as exc:
        fail(str(exc))
    except MissingDependency as exc:
        fail(f"the client cannot run here: {exc}")
    return clients


PROGRESS_EVERY_S = 10.0  # a progress line this often when stderr is a log, not a terminal


class _Lines:
    """Progress for a log (a CI job, a pipe): a plain line every PROGRESS_EVERY_S and when the run is done,
    so the log shows the sweep alive; a terminal gets rich's bar instead (a bar in a log is blank lines)."""

    def __init__(self, name: str, total: int) -> None:
        import time

        self.name, self.total, self.done = name, total, 0
        self.clock = time.monotonic
        self.started = self.said = self.clock()

    def advance(self, _: object = None) -> None:
        self.done += 1
        if self.done == self.total or self.clock() - self.said >= PROGRESS_EVERY_S:
            self.say()

    def say(self) -> None:
        self.said = self.clock()
        percent = 100 * self.done // self.total if self.total else 100
        err.print(visible(f"{self.name}: [{self.done}/{self.total}] {percent} %, elapsed "
                          f"{self.said - self.started:.1f} s"), markup=False, highlight=False, soft_wrap=True)

    async def alongside(self, work: Awaitable[_T]) -> _T:
        """``work``, with a line every PROGRESS_EVERY_S even while no case finishes."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(max(PROGRESS_EVERY_S, 0.1))
                if self.clock() - self.said >= PROGRESS_EVERY_S:
                    self.say()

        ticker = asyncio.create_task(tick())
        try:
            return await work
        finally:
            ticker.cancel()


@contextmanager
def _progress(name: str, total: int) -> Iterator[tuple[Callable[[object], None],
                                                       Callable[[Awaitable[RunReport]], Awaitable[RunReport]]]]:
    """(advance, alongside): a rich bar on a terminal, plain lines in a log."""
    if not err.is_terminal:
        lines = _Lines(name, total)
        yield lines.advance, lines.alongside
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    async def just(work: Awaitable[RunReport]) -> RunReport:
        return await work

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(escape(visible(name)), total=total)
        yield lambda _: bar.advance(task), just


def _run_with_progress(client: Client, cases: list[Case], options: RunOptions,
                       cassettes: CassetteCache, stop: _Stop | None = None) -> RunReport:
    """The run, with its progress; with ``stop``, a stop signal ends it with the cases finished so far."""
    from replay.conformance.runner import run_cases

    with _progress(client.name, len(cases)) as (advance, alongside):
        if stop is not None:
            report = _in_loop(stop, lambda interrupt: alongside(run_cases(cases, client, options, advance, cassettes,
                                                                          interrupt=interrupt)))
            if report.interrupted:
                report.signal = stop.name
            return report

        async def main() -> RunReport:
            # Ctrl-C cancels the run, so every case's server and client shut down in order.
            loop, current = asyncio.get_running_loop(), asyncio.current_task()
            assert current is not None
            loop.add_signal_handler(signal.SIGINT, current.cancel)
            try:
                return await alongside(run_cases(cases, client, options, advance, cassettes))
            finally:
                loop.remove_signal_handler(signal.SIGINT)

        try:
            return asyncio.run(main())
        except (KeyboardInterrupt, asyncio.CancelledError):
            fail("interrupted: no report written", code=130)


@app.command(cls=_Command)
def record(
    output: Annotated[Path, typer.Option("-o", "--output", metavar="PATH", help="The cassette to write.")],
    upstream: Annotated[str, typer.Option(metavar="URL", help="The real API (or any Realtime "
                                                              "server).")] = "wss://api.openai.com",
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on: this machine only, unless "
                                                           "--allow-remote.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port, 0 to 65535; 0 picks a free one.")] = 8766,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Listen beyond this machine with --host; "
                                               "remote clients must bring their own key (yours is lent to local "
                                               "clients only).")] = False,
    record_mode: Annotated[str, typer.Option("--record-mode", metavar="MODE",
                                             help="once (refuse an existing file), new_episodes (append), all (replace "
                                                  "the interactions), rewrite (a fresh file), "
                                                  "none (refuse to record).")] = "once",
    audio: Annotated[str, typer.Option(metavar="MODE", help="compact: store audio as size + digest; "
                                                            "full: keep it.")] = "compact",
    scrub_env: Annotated[list[str] | None, typer.Option("--scrub-env", metavar="NAME",
                                                        help="Also scrub the value of this environment variable "
                                                             "wherever it appears.")] = None,
) -> None:
    """Record real sessions through a local proxy; Ctrl-C writes the cassette (secrets scrubbed)."""
    from replay.net.recorder import RecordingProxy, is_loopback, run_until_signalled

    if audio not in ("compact", "full"):
        fail("--audio must be 'compact' or 'full'")
    with clear_errors():
        _port(port)
        proxy = RecordingProxy(output, upstream=upstream, host=host, port=port, record_mode=record_mode,
                               audio="full" if audio == "full" else "compact", scrub_env=scrub_env or (),
                               allow_remote=allow_remote, on_notice=lambda line: _say(f"  {line}"))

    def ready(p: RecordingProxy) -> None:
        console.print(f"[bold]rtreplay[/] recording to [cyan]{escape(visible(str(output)))}[/] through "
                      f"{escape(visible(upstream))}")
        if not is_loopback(p.host):
            _say(f"  warning: listening on {p.host}, reachable from other machines; they get no key of yours")
        _say(f"  WebSocket: {p.ws_url('gpt-realtime')}")
        _say(f"  export OPENAI_BASE_URL={p.http_base_url}")
        console.print("  Ctrl-C to stop and write the cassette.")

    with clear_errors():
        try:
            result = asyncio.run(run_until_signalled(proxy, ready))
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                raise
            fail(_listen_error(proxy.host, port, exc))
    if result.path is None:
        fail("nothing was recorded; no file written" + (f" ({'; '.join(result.problems)})" if result.problems
                                                           else ""), code=1)
    if result.closed_live:
        _say(f"closed {result.closed_live} live session(s) with 1001 going away")
    state = "complete" if result.complete else "incomplete: " + "; ".join(result.problems)
    _say(f"wrote {result.path}: {result.sessions} session(s), {result.http} HTTP call(s), {state}")


@app.command("import", cls=_Command)
def import_(
    trace: Annotated[Path, typer.Argument(metavar="TRACE", help="A JSON Lines event log or a pydantic-ai websocket "
                                                                "cassette.")],
    output: Annotated[Path, typer.Option("-o", "--output", metavar="PATH", help="The cassette to write.")],
    source: Annotated[str | None, typer.Option(metavar="REF",
                                               help="Where the trace came from (repo/path@commit).")] = None,
    license_: Annotated[str | None, typer.Option("--license", metavar="LICENSE", help="The trace's license.")] = None,
    compact: Annotated[bool, typer.Option("--compact/--full-audio",
                                          help="Store audio payloads as size + digest.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing cassette.")] = False,
) -> None:
    """Convert an existing trace into a cassette (origin: imported)."""
    from replay.authoring.importer import ImportFailed, import_trace

    if output.exists() and not force:
        fail(f"{output} exists; pass --force to replace it")
    with clear_errors():
        _writable("-o", output)  # before the trace is read: a run that cannot write says so first
    try:
        cassette = import_trace(trace, source=source, license=license_, compact=compact)
    except ImportFailed as exc:
        fail(str(exc))
    try:
        cassette.save(output)
    except OSError as exc:  # the user's path, never the temporary file beside it
        fail(f"-o {output}: cannot write the cassette: {exc.strerror or exc}")
    frames = sum(len(s.frames) for s in cassette.sessions)
    license_text = cassette.metadata.get("license")
    _say(f"wrote {output}: {len(cassette.sessions)} session(s), {frames} frames, "
         + (f"license {license_text}" if license_text else "license unknown"))


@app.command(cls=_Command)
def matrix(
    client: Annotated[list[str] | None, typer.Option("--client", metavar="NAME",
                                                     help="Clients to compare (default: the reference clients and "
                                                          "every library driver).")] = None,
    case: Annotated[list[str] | None, typer.Option("--case", metavar="GLOB",
                                                   help="Case globs (default: one GA audio response cut everywhere, "
                                                        "the text-only and the function-call cases).")] = None,
    update: Annotated[Path | None, typer.Option(metavar="PATH", help="Rewrite the generated table in this file "
                                                                     "(README.md).")] = None,
    speed: Annotated[float, typer.Option(metavar="FACTOR", help="Replay timing up to the cut.")] = 1.0,
) -> None:
    """Run several clients over the same cases and print (or update) the client × case table."""
    from replay.cassettes.corpus import conformance_corpus
    from replay.clients.base import dialects_of
    from replay.conformance import matrix as table
    from replay.conformance.cuts import build_cases, select
    from replay.conformance.matrix import MATRIX_CASES, MATRIX_CLIENTS, MATRIX_OPTIONS
    from replay.conformance.runner import CassetteCache

    with clear_errors():
        corpus = conformance_corpus()
        cases = select(build_cases(corpus), case or MATRIX_CASES)
        if not cases:
            raise ValueError(f"no case matches {' '.join(case or MATRIX_CASES)!r}")
    clients = _clients(client or MATRIX_CLIENTS)
    options = dataclasses.replace(MATRIX_OPTIONS, speed=speed)
    cassettes = CassetteCache(corpus)
    reports = []
    for checked in clients:
        own = [c for c in cases if c.dialect in dialects_of(checked)]
        reports.append(_run_with_progress(checked, own, options, cassettes))
    rendered = table.render(reports)
    typer.echo(rendered)
    if update is not None:
        command = "rtreplay matrix" + "".join(f" --client {n}" for n in client or []) + \
            "".join(f" --case '{c}'" for c in case or []) + f" --update {update.name}"
        with clear_errors():
            table.update(update, rendered, command=command)
        _say(f"updated {update}")


@app.command(cls=_Command)
def lint(
    cassettes: Annotated[list[str], typer.Argument(metavar="CASSETTE", help="Cassette files or bundled names.")],
    secrets: Annotated[bool, typer.Option("--secrets", help="Also fail on anything shaped like a secret.")] = False,
) -> None:
    """Replay recorded client frames through the rules beside the recorded server frames; exit 1 on findings."""
    from replay.authoring.lint import lint_cassette

    total = 0
    for name in cassettes:
        with clear_errors():
            loaded = load(resolve_cassette(name))
            findings = [str(f) for f in lint_cassette(loaded)]
        if secrets:
            from replay.cassettes.scrub import find_secrets

            findings += [f"{loaded.name}: [secret] {hit}" for hit in find_secrets(loaded)]
        for finding in findings:
            console.print(visible(finding), highlight=False, markup=False, soft_wrap=True)
        total += len(findings)
        if not findings:
            console.print(f"[green]ok[/] {escape(visible(loaded.name))}", highlight=False)
    if total:
        console.print(f"[red]{total} finding(s)[/]")
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
