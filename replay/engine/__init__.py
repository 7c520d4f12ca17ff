"""The engine, pure in the manner of h11: what the server holds (`state`), how it answers a client
event (`conversation`), the model's and the user's output (`output`, `script`, `player`) and strict
matching. Events in, events out: no sockets, no clock, no tasks. Imports `replay.cassettes` and below."""
