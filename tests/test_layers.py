"""The folders are the architecture: no import cycle in replay/, and no layer imports one above it.

The layers are data here, lowest first; a module's layer is the folder it lives in. Every import
counts, at module level or inside a function, because a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "replay"
# Lowest first. A module may import its own layer and any layer before it in this list.
LAYERS: list[tuple[str, str]] = [
    ("replay", "the package's own few helpers: text, files, version"),
    ("replay.wire", "facts and data: protocol, dialects, the rule table"),
    ("replay.cassettes", "the cassette format: load, cache, corpus, scrub, show"),
    ("replay.engine", "pure: state, conversation, output, script, players, strict matching"),
    ("replay.authoring", "making, checking and showing cassettes with the engine: import, synthesize, lint, show"),
    ("replay.net", "asyncio shells: the server, the wire log, the recorder"),
    ("replay.clients", "the clients the harness drives (public: replay.clients.base.Client)"),
    ("replay.conformance", "the user and the judge: cuts, harness, runner, verdicts, reports, matrix"),
    ("replay.pytest_plugin", "pytest's entry point"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The deepest layer whose name is a prefix of the module's (``replay`` itself is layer 0)."""
    matches = [index for index, (name, _) in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    assert matches, f"{module}: in no layer of tests/test_layers.py"
    return max(matches, key=lambda index: len(LAYERS[index][0]))


def imports_of(path: Path) -> set[str]:
    """The replay modules a file imports (``from replay.x import y``: replay.x, and replay.x.y if a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "replay" or name.startswith("replay.")}


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in root.rglob("*.py") if "node_modules" not in p.parts}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = {target for target in imports_of(path) if target in modules and target != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    # A package's __init__ importing nothing is fine; `replay/__init__.py` is imported by everyone.
    return sorted(f"{source} ({LAYERS[layer_of(source)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                  for source, targets in edges.items() for target in targets
                  if target != "replay" and layer_of(target) > layer_of(source))


def test_replay_has_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_no_layer_imports_a_layer_above_it() -> None:
    assert upward(graph()) == []


def test_every_module_is_in_a_layer() -> None:
    for name in graph():
        layer_of(name)


@pytest.mark.parametrize("planted, finds", [
    ({"replay.wire.protocol": {"replay.engine.state"}}, "upward"),
    ({"replay.engine.state": {"replay.engine.output"}, "replay.engine.output": {"replay.engine.state"}}, "cycle"),
])
def test_the_checks_catch_what_they_guard(planted: dict[str, set[str]], finds: str) -> None:
    """A cycle or an upward import added on purpose is found (the checks can fail)."""
    edges = graph()
    for source, targets in planted.items():
        edges.setdefault(source, set()).update(targets)
    if finds == "upward":
        assert any(line.startswith("replay.wire.protocol ") for line in upward(edges))
    else:
        assert ["replay.engine.output", "replay.engine.state"] in cycles(edges)
