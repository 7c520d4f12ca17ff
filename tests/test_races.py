"""Server latency makes the races of real networks happen: cancel-then-create, and a stale double delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.asyncio.client import connect

from replay.cassettes.cassette import load
from replay.clients.base import ClientOutcome, Target
from replay.conformance.cuts import Case, build_cases, select
from replay.conformance.runner import RunOptions, run_cases

from .conftest import CASSETTES

TYPED = ("conversation.item.create", "response.create")


def cases(case_id: str) -> list[Case]:
    path = CASSETTES / "ga_text_turn_audio_response.yaml"
    return select(build_cases([(path, load(path))]), [case_id])


class RaceClient:
    """Types the recorded turn, then at the barge-in does what ``mode`` says, the way a hurried client would.

    - ``cancel-create``: `response.cancel` and, at once, a new `response.create` (livekit #2064);
    - ``double-delete``: deletes the assistant item, and deletes it again 20 ms later if no
      `conversation.item.deleted` has arrived by then (the stale-context race).
    """

    dialects = ("ga",)

    def __init__(self, mode: str) -> None:
        self.name = f"race-{mode}"
        self.mode = mode

    def version(self) -> str | None:
        return "test"

    async def run(self, target: Target, stop: asyncio.Event) -> ClientOutcome:
        async with connect(target.ws_url, additional_headers={"Authorization": f"Bearer {target.api_key}"}) as ws:
            for event in target.client_script:
                if event["type"] in TYPED:
                    await ws.send(json.dumps(event))
            reader = asyncio.create_task(self._read(ws))
            await stop.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ClientOutcome()

    async def _read(self, ws: Any) -> None:
        item: str | None = None
        deleted: set[str] = set()
        async for raw in ws:
            event = json.loads(raw)
            etype = event["type"]
            if etype == "response.output_item.added" and item is None:
                item = event["item"]["id"]
            elif etype == "conversation.item.deleted":
                deleted.add(event["item_id"])
            elif etype == "input_audio_buffer.speech_started" and item is not None:
                if self.mode == "cancel-create":
                    await ws.send(json.dumps({"type": "response.cancel"}))
                    await ws.send(json.dumps({"type": "response.create"}))
                else:
                    await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": item}))
                    self.again = asyncio.create_task(self._delete_again(ws, item, deleted))

    async def _delete_again(self, ws: Any, item: str, deleted: set[str]) -> None:
        await asyncio.sleep(0.02)
        if item not in deleted:  # its mirror of the conversation still holds the item
            await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": item}))


async def verdict(mode: str, case_id: str, latency_ms: float) -> Any:
    options = RunOptions(speed=1.0, latency_ms=latency_ms)
    [result] = (await run_cases(cases(case_id), RaceClient(mode), options)).results
    return result.verdict


async def test_cancel_then_create_meets_t9_under_latency_and_not_without() -> None:
    slow, quick = await asyncio.gather(verdict("cancel-create", "RT-INT-6", 50),
                                       verdict("cancel-create", "RT-INT-6", 0))
    assert slow.verdict == "FAILED" and "conversation_already_has_active_response" in slow.reason
    assert "wait for the cancelled response's response.done" in slow.reason
    assert quick.verdict != "FAILED", quick.reason


async def test_a_stale_double_delete_meets_t4_under_latency_and_not_without() -> None:
    slow, quick = await asyncio.gather(verdict("double-delete", "RT-INT-4", 50),
                                       verdict("double-delete", "RT-INT-4", 0))
    assert slow.verdict == "FAILED" and "item_delete_invalid_item_id" in slow.reason
    assert [a.split()[0] for a in slow.actions] == ["delete", "delete"]
    assert quick.verdict == "OK" and [a.split()[0] for a in quick.actions] == ["delete"], quick.reason
