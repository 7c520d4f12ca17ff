"""Cassettes: the file format (vcrpy YAML holding WebSocket sessions), its bounded loader and cache,
the bundled corpus, and secret scrubbing. A cassette is untrusted input here.
Imports `replay.wire` and below."""
