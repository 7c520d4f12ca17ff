"""Cassettes: vcrpy cassette files that also hold WebSocket sessions.

A cassette is a vcrpy YAML file (``version: 1``, ``interactions:``) that vcrpy's own deserializer
loads. HTTP interactions are ordinary vcrpy interactions. A WebSocket session is one interaction
whose request is the upgrade and whose response is the ``101`` plus a ``websocket`` mapping:
``dialect``, ``frames`` (``t``, ``from``, and ``event`` | ``text`` | ``binary``) and ``close``.
Audio payloads may be compacted to ``{"$audio": {"bytes": N, "sha256": ...}}``; replay turns a
compacted payload into exactly N bytes of silence, so every `audio_end_ms` rule still holds.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gc
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import yaml

from replay.cassettes.cache import MAX_FILE_BYTES, ParsedCache
from replay.files import NotAFile, read_bytes, write_atomic
from replay.text import visible
from replay.wire.protocol import AUDIO_DELTA_TYPES, DIALECTS, Dialect, silence_b64

try:
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_STR, _SEQ, _MAP = (f"tag:yaml.org,2002:{name}" for name in ("str", "seq", "map"))
_SCALARS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "binary", "timestamp"))


class _FastLoader(_Loader):
    """PyYAML's safe loader, building the plain mappings, lists and strings a cassette is made of itself.

    A cassette is hundreds of thousands of nodes; PyYAML's general machinery (two-phase generators
    for every mapping, merge keys, recursive structures, path resolvers) costs more than reading
    them. Scalars are resolved with PyYAML's own implicit-resolver table and built by its own
    constructors, so the data is the same. Anything else (explicit tags such as ``!!omap`` or
    ``!!set``, merge keys, a node that contains itself, an error) is handed to PyYAML's own
    construction of the whole document, which gives its usual result or its usual error.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], _ANY_FIRST):
                    if regexp.match(value):
                        return tag
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP

    def construct_document(self, node: Any) -> Any:
        try:
            return self._build(node)
        except UnsafeYAML:
            raise
        except Exception:  # PyYAML decides: the same value its own way, or its own error...
            _bounds(node, {}, 0, limit=_distinct(node) + MAX_ALIAS_NODES)  # ...bounded (merge keys expand too)
            self.constructed_objects, self.recursive_objects = {}, {}
            return super().construct_document(node)

    def _build(self, root: Any) -> Any:
        built: dict[int, Any] = {}  # by node: an alias is the same object, as PyYAML makes it
        in_progress = object()
        constructors = self.yaml_constructors
        depth = 0  # of the collection being built
        sizes: dict[int, tuple[int, int]] = {}  # (nodes, depth) of an aliased node, expanded
        added = 0  # nodes the aliases add to the tree as written

        def build(node: Any) -> Any:
            nonlocal depth, added
            kind, tag = node.__class__, node.tag
            if kind is yaml.ScalarNode:
                if tag == _STR:
                    return node.value
                if tag not in _SCALARS:  # a merge key, a collection tag on a scalar, a tag of the user's
                    raise _NotPlain
                return constructors[tag](self, node)
            key = id(node)
            done = built.get(key, in_progress)
            if done is not in_progress:  # an alias: one object, but consumers walk it as often as it is used
                nodes, _ = _bounds(node, sizes, depth, limit=MAX_ALIAS_NODES)
                added += nodes
                if added > MAX_ALIAS_NODES:
                    raise UnsafeYAML(_TOO_MANY)
                return done
            if key in built:
                raise UnsafeYAML(_RECURSIVE)
            depth += 1
            if depth > MAX_DEPTH:
                raise UnsafeYAML(_TOO_DEEP)
            built[key] = in_progress
            if kind is yaml.SequenceNode and tag == _SEQ:
                value: Any = [build(child) for child in node.value]
            elif kind is yaml.MappingNode and tag == _MAP:
                value = {build(key_node): build(value_node) for key_node, value_node in node.value}
            else:
                raise _NotPlain
            depth -= 1
            built[key] = value
            return value

        return build(root)


MAX_DEPTH = 100  # levels of nesting; a cassette has about 15, an event's own data a few more
MAX_ALIAS_NODES = 1_000_000  # nodes YAML aliases may add to a cassette when expanded (a billion laughs adds 10**9)
_TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"
_TOO_MANY = f"its YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes"
_RECURSIVE = "a YAML alias refers to a node that contains it (a recursive structure)"


class UnsafeYAML(ValueError):
    """A document no consumer could walk in bounded time and memory; the message says why."""



def parse_yaml(text: str) -> tuple[Any, Any]:
    """(root node, data) of a YAML document, within the loader's bounds: `yaml.YAMLError` or `UnsafeYAML`.

    For other YAML formats read beside cassettes (the importer's): the node gives line numbers.
    """
    loader = _FastLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def _bounds(root: Any, sizes: dict[int, tuple[int, int]], depth: int, *, limit: int) -> tuple[int, int]:
    """(nodes, nesting) of ``root`` with every alias expanded, at ``depth``; `UnsafeYAML` past ``limit`` nodes
    or `MAX_DEPTH` levels.

    Iterative and memoized by node, so it is linear in the nodes as written, however far aliases
    would expand them (and however long a chain of aliases is).
    """
    if root.__class__ is yaml.ScalarNode:
        return 1, 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes and not children_done:
            continue
        children = [c for pair in node.value for c in pair] if node.__class__ is yaml.MappingNode else node.value
        collections = [c for c in children if c.__class__ is not yaml.ScalarNode]
        if not children_done:
            if key in open_nodes:
                raise UnsafeYAML(_RECURSIVE)
            open_nodes.add(key)
            stack.append((node, True))
            for child in collections:
                if id(child) in open_nodes:
                    raise UnsafeYAML(_RECURSIVE)
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_nodes.discard(key)
        nodes = 1 + len(children) - len(collections)
        height = 0
        for child in collections:
            child_nodes, child_height = sizes[id(child)]
            nodes += child_nodes
            height = max(height, child_height)
            if nodes > limit:
                raise UnsafeYAML(_TOO_MANY)
        sizes[key] = (nodes, height + 1)
    nodes, height = sizes[id(root)]
    if depth + height > MAX_DEPTH:
        raise UnsafeYAML(_TOO_DEEP)
    return nodes, height


def _distinct(root: Any) -> int:
    """Nodes as written: each node object once, however many aliases refer to it."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.__class__ is yaml.MappingNode:
            stack += [c for pair in node.value for c in pair]
        elif node.__class__ is yaml.SequenceNode:
            stack += node.value
    return len(seen)


class _NotPlain(Exception):
    """A node the fast construction leaves to PyYAML."""


assert not _FastLoader.yaml_path_resolvers, "resolve() above assumes no path resolvers, as in every safe loader"
# PyYAML's implicit resolvers by a plain scalar's first character ("" when empty), each followed by
# the ones for any first character, in PyYAML's order of trying them.
_ANY_FIRST = tuple(_FastLoader.yaml_implicit_resolvers.get(None, ()))
_IMPLICIT = {first: (*resolvers, *_ANY_FIRST) for first, resolvers in _FastLoader.yaml_implicit_resolvers.items()
             if first is not None}


Source = Literal["client", "server"]
AUDIO_FIELD = {"input_audio_buffer.append": "audio", **{name: "delta" for name in AUDIO_DELTA_TYPES}}


class CassetteError(ValueError):
    """A cassette that cannot be used; the message names the file and what is wrong."""


@dataclass
class Frame:
    t: float  # seconds since the socket opened
    source: Source
    event: dict[str, Any] | None = None
    text: str | None = None  # a text frame that is not a JSON object
    binary: bytes | None = None

    @property
    def type(self) -> str | None:
        t = self.event.get("type") if self.event is not None else None
        return t if isinstance(t, str) else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(self.t, 6), "from": self.source}
        if self.event is not None:
            out["event"] = self.event
        elif self.binary is not None:
            out["binary"] = base64.b64encode(self.binary).decode("ascii")
        else:
            out["text"] = self.text or ""
        return out


@dataclass
class WebSocketSession:
    uri: str
    dialect: Dialect
    frames: list[Frame]
    request_headers: dict[str, list[str]] = field(default_factory=dict)
    response_headers: dict[str, list[str]] = field(default_factory=dict)
    close: dict[str, Any] | None = None  # {code, reason, by}

    @property
    def model(self) -> str | None:
        query = parse_qs(urlsplit(self.uri).query)
        for key in ("model", "deployment"):
            if query.get(key):
                return query[key][0]
        return None

    def to_interaction(self) -> dict[str, Any]:
        websocket: dict[str, Any] = {"dialect": self.dialect, "frames": [f.to_dict() for f in self.frames]}
        if self.close is not None:
            websocket["close"] = self.close
        return {
            "request": {"body": None, "headers": self.request_headers, "method": "GET", "uri": self.uri},
            "response": {
                "status": {"code": 101, "message": "Switching Protocols"},
                "headers": self.response_headers,
                "body": {"string": ""},
                "websocket": websocket,
            },
        }


@dataclass
class Cassette:
    metadata: dict[str, Any]
    interactions: list[WebSocketSession | dict[str, Any]]  # dicts are plain vcrpy HTTP interactions
    path: Path | None = None

    @property
    def sessions(self) -> list[WebSocketSession]:
        return [i for i in self.interactions if isinstance(i, WebSocketSession)]

    @property
    def http_interactions(self) -> list[dict[str, Any]]:
        return [i for i in self.interactions if isinstance(i, dict)]

    @property
    def name(self) -> str:
        """The file's stem (or the metadata's name), as a line may show it: a shared file names itself."""
        return visible(self.path.stem if self.path else str(self.metadata.get("name", "cassette")))

    def to_data(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata,  # first, so `head` shows origin, source and license
            "interactions": [i.to_interaction() if isinstance(i, WebSocketSession) else i for i in self.interactions],
            "version": 1,
        }

    def dumps(self) -> str:
        return yaml.dump(self.to_data(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

    def save(self, path: str | Path) -> Path:
        """Write atomically: a reader sees the old file or the new one, never half of either."""
        target = Path(path)
        write_atomic(target, self.dumps())
        self.path = target
        return target


# ---------------------------------------------------------------------------- loading


def _loader_identity() -> bytes:
    """What the cache salts its keys with: this loader's code and PyYAML's, so no entry outlives either."""
    try:
        source = Path(__file__).read_bytes()
    except OSError:
        source = b""
    return b"\0".join([source, repr(DIALECTS).encode(), yaml.__version__.encode(), _Loader.__name__.encode()])


_CACHE = ParsedCache(_loader_identity())


def load(path: str | Path) -> Cassette:
    """Parse a cassette file; one loaded before (same bytes, same loader) comes from the user's cache."""
    with _gc_paused():
        return _load(path if isinstance(path, Path) else Path(path))


def _load(path: Path) -> Cassette:
    try:
        raw = read_bytes(path, limit=MAX_FILE_BYTES)
    except OSError as exc:
        raise CassetteError(f"{path}: {_unreadable(exc)}") from None
    key = _CACHE.key(raw)
    cached = _CACHE.get(key)
    if cached is not None:
        with contextlib.suppress(TypeError, ValueError, KeyError):  # not what this loader writes: parse it again
            return _from_plain(cached, path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CassetteError(f"{path}: not a text file (byte {exc.start} is not UTF-8; a cassette is YAML)") from None
    if "\r" in text:  # line ends as reading in text mode gives them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    cassette = loads(text, path)
    _CACHE.put(key, _to_plain(cassette))
    return cassette


def _unreadable(exc: OSError) -> str:
    """Why a cassette file cannot be read, in the words `replay.files.read_text` uses."""
    if isinstance(exc, FileNotFoundError):
        return "no such cassette file"
    if isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR:
        return "is a directory, not a cassette"
    if isinstance(exc, NotAFile):
        return f"{exc.strerror}: a cassette is a YAML file"
    return f"cannot read: {exc.strerror or exc}"


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a cassette is built.

    Parsing (or unmarshalling) makes a container per node and none of them is garbage, yet each
    allocation counts towards the collector's next pass, and with a large heap alive those passes
    cost as much as the parse itself (a 10-minute session: 1.4 s with the collector, 0.8 s without).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def loads(raw: str, path: str | Path = "<string>") -> Cassette:
    """A cassette from its YAML text; `CassetteError` naming ``path`` for anything unusable.

    Loading is bounded whatever the text: YAML aliases stay shared objects and may add at most
    `MAX_ALIAS_NODES` nodes when expanded, nesting is at most `MAX_DEPTH` levels, and a node that
    contains itself is refused, so nothing that walks a loaded cassette can run away.
    """
    where = str(path)
    try:
        with _gc_paused():
            data = yaml.load(raw, Loader=_FastLoader)  # noqa: S506 - a CSafeLoader: no Python tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CassetteError(f"{where}: not valid YAML{at}: {problem}") from None
    except UnsafeYAML as exc:
        raise CassetteError(f"{where}: refused: {exc}") from None
    return from_data(data, path)


def from_data(data: Any, path: str | Path = "<string>") -> Cassette:
    """A cassette from the plain data of its YAML document (what `loads` parses), checked."""
    where = str(path)
    if not isinstance(data, dict):
        raise CassetteError(f"{where}: a cassette is a mapping with 'version' and 'interactions'")
    version = data.get("version")
    if type(version) is not int or version != 1:
        raise CassetteError(f"{where}: unsupported cassette version {version!r} (expected 1)")
    interactions = data.get("interactions")
    if not isinstance(interactions, list):
        raise CassetteError(f"{where}: 'interactions' must be a list")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CassetteError(f"{where}: 'metadata' must be a mapping")
    parsed: list[WebSocketSession | dict[str, Any]] = []
    for index, interaction in enumerate(interactions):
        at = f"{where}: interactions[{index}]"
        if not isinstance(interaction, dict) or not isinstance(interaction.get("request"), dict) \
                or not isinstance(interaction.get("response"), dict):
            raise CassetteError(f"{at}: needs a 'request' and a 'response' mapping")
        websocket = interaction["response"].get("websocket")
        if websocket is None:
            _check_http(interaction, at)
            parsed.append(interaction)
        else:
            parsed.append(_session(interaction, websocket, at))
    return Cassette(metadata, parsed, Path(path) if where != "<string>" else None)


def _to_plain(cassette: Cassette) -> tuple[Any, ...]:
    """The parsed cassette as plain data for the cache: an HTTP interaction is a dict, a session a tuple
    with its frames by column (one list per field: fewer objects to store and to make again)."""
    interactions = [
        (i.uri, i.dialect, [f.t for f in i.frames], [f.source for f in i.frames], [f.event for f in i.frames],
         [f.text for f in i.frames], [f.binary for f in i.frames], i.request_headers, i.response_headers, i.close)
        if isinstance(i, WebSocketSession) else i
        for i in cassette.interactions
    ]
    return cassette.metadata, interactions


def _from_plain(plain: Any, path: Path) -> Cassette:
    """Inverse of `_to_plain`. The entry is ours (key, length and CRC-32 checked), yet its shape is checked
    again, in C-speed passes over the columns (a few per cent of a hit): an entry of another shape raises
    TypeError, ValueError or KeyError, and the caller parses the file instead. The rest (times in order,
    text and binary frames, what is inside each event) is checked again where each session is compiled
    (`replay.engine.script.check_session`), with the one-line error a file gets."""
    metadata, interactions = plain
    if type(metadata) is not dict or type(interactions) is not list:
        raise TypeError("not an entry")
    parsed: list[WebSocketSession | dict[str, Any]] = []
    for index, item in enumerate(interactions):
        if type(item) is dict:
            if not isinstance(item.get("request"), dict) or not isinstance(item.get("response"), dict):
                raise TypeError("not an interaction")
            _check_http(item, f"{path}: interactions[{index}]")
            parsed.append(item)
            continue
        if type(item) is not tuple:
            raise TypeError("not a session")
        uri, dialect, ts, sources, events, texts, binaries, request_headers, response_headers, close = item
        if type(uri) is not str or dialect not in DIALECTS:
            raise TypeError("not a session")
        if not (set(map(type, ts)) <= _FLOAT and set(sources) <= _SOURCES and set(map(type, events)) <= _EVENTS):
            raise ValueError("not the frames a load makes")
        if type(request_headers) is not dict or type(response_headers) is not dict or not (
                close is None or type(close) is dict):
            raise TypeError("not a session")
        frames = list(map(Frame, ts, sources, events, texts, binaries))
        parsed.append(WebSocketSession(uri, dialect, frames, request_headers, response_headers, close))
    return Cassette(metadata, parsed, path)


_FLOAT, _SOURCES, _EVENTS = frozenset({float}), frozenset({"client", "server"}), frozenset({dict, type(None)})


MAX_T = 10**10  # seconds: a frame's time since the socket opened (or, imported, a clock's), finite
# A compacted payload replays as that many bytes of silence, so its size is bounded: 60 minutes (the
# longest Realtime session) of the densest format, pcm16 at 24 kHz, 48 bytes per ms, for a session in all.
MAX_AUDIO_BYTES = 60 * 60_000 * 48
_AUDIO_BOUND = "at most 60 minutes of pcm16 audio, 48 bytes per ms, in a session"


def _optional(value: Any, kind: type) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def session_audio(so_far: int, event: dict[str, Any], at: str) -> int:
    """The session's compacted audio bytes with this event's, refused past `MAX_AUDIO_BYTES` in all."""
    key = AUDIO_FIELD.get(event["type"])
    if key is None or isinstance(event.get(key), str | None):
        return so_far
    total = so_far + compacted_bytes(event[key], f"{at}.{key}")
    if total > MAX_AUDIO_BYTES:
        raise CassetteError(f"{at}.{key}: the session's compacted audio comes to more than "
                            f"{MAX_AUDIO_BYTES:,} bytes ({_AUDIO_BOUND})")
    return total


def compacted_bytes(payload: Any, at: str) -> int:
    """The size a compacted audio payload stands for; anything but a base64 string or ``{"$audio": {"bytes": N}}``
    is refused, and N must be a whole number of bytes within `MAX_AUDIO_BYTES`."""
    inner = payload.get("$audio") if isinstance(payload, dict) else None
    if not isinstance(inner, dict):
        raise CassetteError(f"{at}: must be base64 audio or a compacted {{'$audio': {{'bytes': N}}}}, "
                            f"got {_kind(payload)}")
    size = inner.get("bytes")
    if type(size) is not int or not 0 <= size <= MAX_AUDIO_BYTES:
        raise CassetteError(f"{at}.$audio.bytes: must be a whole number of bytes from 0 to {MAX_AUDIO_BYTES:,} "
                            f"({_AUDIO_BOUND}), got {_shown_value(size)}")
    return size


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _shown_value(value: Any) -> str:
    """A value for an error line: short, whatever it is."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _check_http(interaction: dict[str, Any], at: str) -> None:
    request = interaction["request"]
    for key in ("method", "uri"):
        if not isinstance(request.get(key), str):
            raise CassetteError(f"{at}.request.{key}: must be a string")
    status = interaction["response"].get("status")
    if not isinstance(status, dict) or not isinstance(status.get("code"), int):
        raise CassetteError(f"{at}.response.status.code: must be an integer")


def _headers(value: Any, at: str) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CassetteError(f"{at}: must be a mapping of header name to values")
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in value.items()}


def _session(interaction: dict[str, Any], websocket: Any, at: str) -> WebSocketSession:
    request = interaction["request"]
    if not isinstance(websocket, dict):
        raise CassetteError(f"{at}.response.websocket: must be a mapping")
    uri = request.get("uri")
    if not isinstance(uri, str):
        raise CassetteError(f"{at}.request.uri: must be a string")
    dialect = websocket.get("dialect")
    if dialect not in DIALECTS:
        raise CassetteError(f"{at}.response.websocket.dialect: must be 'beta' or 'ga', got {dialect!r}")
    frames_raw = websocket.get("frames")
    if not isinstance(frames_raw, list):
        raise CassetteError(f"{at}.response.websocket.frames: must be a list")
    frames: list[Frame] = []
    last_t = 0.0
    audio = 0  # compacted bytes so far
    for i, raw in enumerate(frames_raw):
        fat = f"{at}.response.websocket.frames[{i}]"
        if not isinstance(raw, dict):
            raise CassetteError(f"{fat}: must be a mapping with 't', 'from' and 'event'")
        t = raw.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool) or not 0 <= t <= MAX_T:
            raise CassetteError(f"{fat}.t: must be a number of seconds from 0 to {MAX_T:.0e}, got {_shown_value(t)}")
        if t < last_t:
            raise CassetteError(f"{fat}.t: {t} goes back in time (previous frame at {last_t})")
        last_t = float(t)
        source = raw.get("from")
        if source not in ("client", "server"):
            raise CassetteError(f"{fat}.from: must be 'client' or 'server', got {source!r}")
        if "event" in raw:
            event = raw["event"]
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise CassetteError(f"{fat}.event: must be a mapping with a string 'type'")
            audio = session_audio(audio, event, f"{fat}.event")
            frames.append(Frame(float(t), source, event=event))
        elif "text" in raw:
            if not isinstance(raw["text"], str):
                raise CassetteError(f"{fat}.text: must be a string (a text frame that is not a JSON event)")
            frames.append(Frame(float(t), source, text=raw["text"]))
        elif "binary" in raw:
            try:
                frames.append(Frame(float(t), source, binary=base64.b64decode(str(raw["binary"]), validate=True)))
            except ValueError:
                raise CassetteError(f"{fat}.binary: must be base64") from None
        else:
            raise CassetteError(f"{fat}: needs one of 'event', 'text' or 'binary'")
    close = websocket.get("close")
    if close is not None and (not isinstance(close, dict) or not _optional(close.get("code"), int)
                              or not _optional(close.get("reason"), str) or not _optional(close.get("by"), str)):
        raise CassetteError(f"{at}.response.websocket.close: must be a mapping with an integer 'code', "
                            "a string 'reason' and 'by'")
    return WebSocketSession(
        uri=uri,
        dialect=dialect,
        frames=frames,
        request_headers=_headers(request.get("headers"), f"{at}.request.headers"),
        response_headers=_headers(interaction["response"].get("headers"), f"{at}.response.headers"),
        close=close,
    )


# ---------------------------------------------------------------------------- audio


def compact_audio(event: dict[str, Any]) -> dict[str, Any]:
    """Replace an audio payload by its size and digest; other events come back unchanged."""
    key = AUDIO_FIELD.get(event.get("type", ""))
    payload = event.get(key) if key else None
    if not isinstance(payload, str) or key is None:
        return event
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        return event  # not base64: keep it as found rather than record a size that is not true
    return {**event, key: {"$audio": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}}


def expand_audio(event: dict[str, Any]) -> dict[str, Any]:
    """A compacted audio payload becomes exactly that many bytes of silence."""
    key = AUDIO_FIELD.get(event.get("type", ""))
    payload = event.get(key) if key else None
    if key is None or not isinstance(payload, dict) or "$audio" not in payload:
        return event
    return {**event, key: silence_b64(compacted_bytes(payload, f"{event.get('type')}.{key}"))}
