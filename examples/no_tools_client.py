"""naive_client.py with PR #6249's logic, minus one thing: it never answers the model's function calls.

A client without tools cannot take a function-call round past the call, so the cases cut in the
response that would follow its answer are NOT-REACHED (which does not fail a run; --min-coverage
makes a gate insist):

    rtreplay check --cmd "python examples/no_tools_client.py" --cassette ga_function_call_round --quiet
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ["FIXED"] = "1"  # read when naive_client is imported (from this directory: Python puts it first)
import naive_client


def no_answer(response: dict[str, Any]) -> list[dict[str, Any]]:
    return []


naive_client.answer_function_calls = no_answer

if __name__ == "__main__":
    asyncio.run(naive_client.main())
