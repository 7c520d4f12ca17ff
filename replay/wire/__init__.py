"""The wire: facts and data about the Realtime protocol — event names of both generations, audio
arithmetic, the rule table with its exact error strings and evidence. Imports nothing of replay
but the package's own helpers (`replay.text`, `replay.files`)."""
