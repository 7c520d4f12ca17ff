"""rtreplay: replay recorded OpenAI Realtime sessions and check how clients handle barge-in."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rtreplay")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.1.0"
