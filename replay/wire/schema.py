"""What the real server accepts from clients, as data: value sets and shapes, with their source.

The official `openai` package's realtime types (3.60.0, `openai/types/realtime/`) are generated from
OpenAI's API description: they are the source of these sets. `tests/test_schema_drift.py` compares
them with the installed package, so drift is a failing test that names the difference.
"""

from __future__ import annotations

# The `model` literal of `realtime_session_create_request.py`: the models the realtime endpoint serves.
REALTIME_MODELS: frozenset[str] = frozenset({
    "gpt-realtime",
    "gpt-realtime-1.5",
    "gpt-realtime-2",
    "gpt-realtime-2.1",
    "gpt-realtime-2.1-mini",
    "gpt-realtime-2025-08-28",
    "gpt-4o-realtime-preview",
    "gpt-4o-realtime-preview-2024-10-01",
    "gpt-4o-realtime-preview-2024-12-17",
    "gpt-4o-realtime-preview-2025-06-03",
    "gpt-4o-mini-realtime-preview",
    "gpt-4o-mini-realtime-preview-2024-12-17",
    "gpt-realtime-mini",
    "gpt-realtime-mini-2025-10-06",
    "gpt-realtime-mini-2025-12-15",
    "gpt-audio-1.5",
    "gpt-audio-mini",
    "gpt-audio-mini-2025-10-06",
    "gpt-audio-mini-2025-12-15",
})
