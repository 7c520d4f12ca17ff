"""The environment is the tested set: every package in constraints.txt is installed at its locked version."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not a pin (name==version)"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return pins


def test_every_locked_package_is_installed_at_its_version() -> None:
    pins = locked()
    assert {"openai", "websockets", "vcrpy", "livekit-agents", "pipecat-ai", "openai-agents"} <= set(pins)
    wrong = {}
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert wrong == {}, "the environment is not the locked set (pip install -c constraints.txt -e '.[dev]'): " + \
        repr(wrong)


def test_the_floors_are_the_tested_versions() -> None:
    """pyproject's floors never promise a version nothing ran: each is the locked one."""
    pins = locked()
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    floors = dict(re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([^",]+)"', text))
    floors = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in floors.items() if k.lower() != "hatchling"}
    assert floors, "no floors found in pyproject.toml"
    assert {name: (floor, pins.get(name)) for name, floor in floors.items() if pins.get(name) != floor} == {}
