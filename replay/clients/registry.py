"""Client names on the command line → client objects: the plug-in point for drivers.

Built-in names map to modules that are imported only when chosen (a driver's library may be
absent). Third-party drivers register under the entry-point group ``rtreplay.clients``, or are
named directly as ``package.module:ATTRIBUTE``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import cast

from replay.clients.base import Client, MissingDependency

BUILTIN: dict[str, str] = {
    "reference-naive": "replay.clients.reference:NAIVE",
    "reference-fixed": "replay.clients.reference:FIXED",
    "openai": "replay.clients.openai_sdk:CLIENT",
    "livekit": "replay.clients.livekit:CLIENT",
    "livekit-pr6249": "replay.clients.livekit:CLIENT_PR6249",
    "openai-agents": "replay.clients.openai_agents:CLIENT",
    "openai-agents-interrupt": "replay.clients.openai_agents:CLIENT_EXPLICIT",
    "pipecat": "replay.clients.pipecat:CLIENT",
    "pipecat-interruption-frame": "replay.clients.pipecat:CLIENT_FRAME",
    "openai-agents-js": "replay.clients.node_drivers:OPENAI_AGENTS_JS",
    "livekit-node": "replay.clients.node_drivers:LIVEKIT_NODE",
    "openai-node": "replay.clients.node_drivers:OPENAI_NODE",
}


class UnknownClient(ValueError):
    pass


def names() -> list[str]:
    return [*BUILTIN, *(ep.name for ep in entry_points(group="rtreplay.clients"))]


def get_client(name: str) -> Client:
    """Resolve a name; raises UnknownClient, or MissingDependency when the driver's library is absent."""
    spec = BUILTIN.get(name)
    if spec is None:
        for ep in entry_points(group="rtreplay.clients"):
            if ep.name == name:
                return _checked(name, ep.load(), f"entry point {ep.value}")
        if ":" not in name:
            raise UnknownClient(f"unknown client {name!r}; choose one of: {', '.join(names())}, "
                                "or name a driver as package.module:ATTRIBUTE")
        spec = name
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except MissingDependency:
        raise
    except ModuleNotFoundError as exc:
        raise UnknownClient(f"client {name!r}: cannot import {module_name} ({exc})") from None
    except Exception as exc:  # a driver that fails to import is named, not a traceback
        raise UnknownClient(f"client {name!r}: importing {module_name} failed: {type(exc).__name__}: {exc}") \
            from None
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise UnknownClient(f"client {name!r}: {module_name} has no {attribute}") from None
    return _checked(name, found, spec)


def _checked(name: str, found: object, where: str) -> Client:
    """The object if it can be run as a client; a user naming the wrong thing hears what a client is."""
    what = "see the Client protocol in replay/clients/base.py: an object with a name and async run(target, stop)"
    named = f"client {name!r}" + (f" ({where})" if where != name else "")
    if isinstance(found, type):
        raise UnknownClient(f"{named} is a class; name an instance of it ({what})")
    if not callable(getattr(found, "run", None)) or not isinstance(getattr(found, "name", None), str):
        raise UnknownClient(f"{named} is not a client ({what})")
    return cast(Client, found)
