"""Making, checking and showing cassettes with the engine: import of captures, synthesized sessions,
lint, and the terminal view (which compiles a cassette first, so it checks what it shows).
Imports `replay.engine` and below."""
