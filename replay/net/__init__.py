"""The asyncio shells: the replay server, the recording proxy, the bytes between a stream and
websockets' sans-I/O protocol, and the per-session wire log. They move bytes and keep time; every
decision is the engine's. Imports `replay.authoring` and below."""
