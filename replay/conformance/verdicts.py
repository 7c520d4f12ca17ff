"""Verdicts: what the client sent after the barge-in, judged against what the server held.

Pure: the input is the case, the server's snapshot at the cut, and the session's wire log. The
verdicts are Autobahn's: OK, NON-STRICT (works, but leaves the conversation worse than it should),
INFORMATIONAL (no rule broken, worth a look), FAILED (the server answered with an error, or the
case could not run). Any server error the client's frames caused is FAILED, whatever else it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from replay.engine.conversation import Snapshot
from replay.text import clip
from replay.wire.protocol import AUDIO_DELTA_TYPES
from replay.wire.rules import RULES

FIXES = {rule.id: rule.fix for rule in RULES if rule.fix}
ADVICE_UNPLAYED = "a correct client deletes an item none of which was played (conversation.item.delete)"
ADVICE_UNHEARD = ("a correct client truncates the item at the ms actually played "
                  "(conversation.item.truncate, audio_end_ms clamped to the audio received)")

OK = "OK"
NON_STRICT = "NON-STRICT"
INFORMATIONAL = "INFORMATIONAL"
FAILED = "FAILED"
NOT_REACHED = "NOT-REACHED"  # the client never took the conversation to the cut: no judgement, no failure
ORDER = (OK, INFORMATIONAL, NON_STRICT, NOT_REACHED, FAILED)
# A client that floods the window gets a verdict of bounded size: the first errors and actions tell the story.
REASON_ERRORS = 3  # server errors spelled out in a reason
KEPT_ERRORS = 20  # error frames kept with a verdict
KEPT_ACTIONS = 50  # client actions after the cut kept with a verdict


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str
    errors: tuple[dict[str, Any], ...] = ()
    actions: tuple[str, ...] = ()  # what the client sent after the cut, summarized
    estimate_ms: int | None = None  # how much audio the user could have heard at the barge-in
    details: dict[str, Any] = field(default_factory=dict)


def _action(event: dict[str, Any]) -> str:
    """One client event as a reader scans for it; what the client chose (an id, a type) is cut if long."""
    etype = event.get("type", "?")
    if etype == "conversation.item.truncate":
        return f"truncate {clip(str(event.get('item_id')))} audio_end_ms={clip(str(event.get('audio_end_ms')))}"
    if etype in ("conversation.item.delete", "conversation.item.retrieve"):
        return f"{etype.rsplit('.', 1)[1]} {clip(str(event.get('item_id')))}"
    return clip(str(etype))


def _kept(actions: Sequence[str]) -> tuple[str, ...]:
    if len(actions) <= KEPT_ACTIONS:
        return tuple(actions)
    return (*actions[:KEPT_ACTIONS], f"(and {len(actions) - KEPT_ACTIONS} more)")


def _error_reason(entries: Sequence[dict[str, Any]], error_index: int) -> str:
    error = entries[error_index]["event"].get("error") or {}
    cause = next((e for e in reversed(entries[:error_index]) if e.get("dir") == "client" and e.get("rule")), None)
    sent = clip(str(cause["event"].get("type"))) if cause and "event" in cause else "a frame"
    answer = f" (answer to {sent} at t={cause['t']:.3f}s, rule {cause['rule']})" if cause else ""
    fix = FIXES.get(cause["rule"]) if cause else None
    # The server's message repeats what the client sent (an item id): cut, as the client's own text is.
    return f"server error {clip(str(error.get('code')))}: {clip(str(error.get('message')))}{answer}" + \
        (f"; a correct client: {fix}" if fix else "")


def judge(snapshot: Snapshot, entries: Sequence[dict[str, Any]], *, tolerance_ms: int = 250,
          client_closed_early: bool = False) -> Verdict:
    """The verdict for one case from its wire log (see module doc)."""
    cut_at = next((i for i, e in enumerate(entries) if e.get("cut")), None)
    if cut_at is None:
        return Verdict(FAILED, "the replay never reached the cut (the client did not drive the recorded session "
                               "that far)")
    # Errors the recording itself holds were caused by the recorded client, not by this one.
    errors = [i for i, e in enumerate(entries) if e.get("dir") == "server" and e.get("origin") != "recorded"
              and e.get("event", {}).get("type") == "error"]
    after = [e["event"] for e in entries[cut_at:] if e.get("dir") == "client" and "event" in e]
    actions = _kept([_action(e) for e in after if e.get("type") != "input_audio_buffer.append"])
    estimate = _estimate(snapshot, entries, cut_at)
    details = {"produced_ms": snapshot.produced_ms, "item_id": snapshot.item_id, "item_held": snapshot.item_held,
               "response_active": snapshot.response_active}
    closed = "; the client closed the connection during the window" if client_closed_early else ""
    raced = [i for i in errors if _raced_cancel(snapshot, entries, i, cut_at)]
    errors = [i for i in errors if i not in raced]
    if errors:
        reasons = "; ".join(_error_reason(entries, i) for i in errors[:REASON_ERRORS])
        if len(errors) > REASON_ERRORS:
            reasons += f"; and {len(errors) - REASON_ERRORS} more server error(s)"
        return Verdict(FAILED, reasons + closed, tuple(entries[i]["event"] for i in errors[:KEPT_ERRORS]), actions,
                       estimate, details)
    item = snapshot.item_id
    truncates = [e for e in after if e.get("type") == "conversation.item.truncate" and e.get("item_id") == item]
    deletes = [e for e in after if e.get("type") == "conversation.item.delete" and e.get("item_id") == item]
    verdict, reason = _decide(snapshot, truncates, deletes, estimate, tolerance_ms)
    elsewhere = [a for a in actions if a.startswith(("truncate ", "delete ")) and item not in a.split()]
    if elsewhere:
        reason += f" (it also sent: {', '.join(elsewhere)})"
    if raced:
        verdict = worst([verdict, INFORMATIONAL])
        reason += ("; its response.cancel raced the server's own cancel (interrupt_response is on) and was "
                   "refused with response_cancel_not_active: harmless if ignored, and unnecessary")
    return Verdict(verdict, reason + closed, tuple(entries[i]["event"] for i in raced[:KEPT_ERRORS]), actions,
                   estimate, details)


def _raced_cancel(snapshot: Snapshot, entries: Sequence[dict[str, Any]], index: int, cut_at: int) -> bool:
    """A cancel refused only because the barge-in had already cancelled the response (reference §8.3).

    Sending it is optional and commonly answered so; it is not the bug of cancelling a response that
    had finished before the user spoke (that stays FAILED).
    """
    error = entries[index]["event"].get("error") or {}
    return (index > cut_at and error.get("code") == "response_cancel_not_active"
            and snapshot.response_active and snapshot.interrupt_response)


def _estimate(snapshot: Snapshot, entries: Sequence[dict[str, Any]], cut_at: int) -> int | None:
    """Audio the user could have heard by the barge-in: wall time since the first delta, capped."""
    if snapshot.item_id is None:
        return None
    first = next((e["t"] for e in entries[:cut_at] if e.get("dir") == "server"
                  and e.get("event", {}).get("type") in AUDIO_DELTA_TYPES
                  and e["event"].get("item_id") == snapshot.item_id), None)
    if first is None:
        return 0
    return max(0, min(snapshot.produced_ms, round((entries[cut_at]["t"] - first) * 1000)))


def _decide(snap: Snapshot, truncates: list[dict[str, Any]], deletes: list[dict[str, Any]],
            estimate: int | None, tolerance_ms: int) -> tuple[str, str]:
    if snap.item_id is None:
        return OK, "no output item yet: nothing to truncate or delete"
    if not snap.audio:
        kind = "function call" if snap.item_type == "function_call" else "text-only item"
        if deletes:
            return INFORMATIONAL, f"deleted the {kind}, which the user may already have seen"
        return OK, f"sent no truncate for a {kind} (only model audio can be truncated)"
    if not snap.item_held:
        return OK, "sent nothing for an item the conversation does not hold (livekit PR #6249)"
    heard = estimate or 0
    if snap.produced_ms == 0 and not truncates:
        if deletes:
            return OK, "deleted the unplayed assistant item (livekit PR #6249)"
        return NON_STRICT, f"unplayed assistant item left in the server's context; {ADVICE_UNPLAYED}"
    if truncates:
        end = truncates[-1].get("audio_end_ms")
        extra = f" ({len(truncates)} truncates)" if len(truncates) > 1 else ""
        if isinstance(end, int) and abs(end - heard) > tolerance_ms:
            return INFORMATIONAL, (f"truncated at {end} ms of {snap.produced_ms} ms produced; the playback "
                                   f"estimate was {heard} ms ({end - heard:+d} ms){extra}")
        return OK, f"truncated at {end} ms of {snap.produced_ms} ms produced (estimate {heard} ms){extra}"
    if deletes:
        if heard <= tolerance_ms:
            return OK, f"deleted the item before any of it could be heard (estimate {heard} ms)"
        return INFORMATIONAL, f"deleted an item whose audio had played for about {heard} ms"
    if not snap.response_active and heard >= snap.produced_ms:
        return OK, "playback had finished: nothing to truncate"
    return NON_STRICT, (f"sent nothing: the server's context keeps {snap.produced_ms} ms of audio and its "
                        f"transcript, though the user heard about {heard} ms; {ADVICE_UNHEARD}")


def worst(verdicts: Sequence[str]) -> str:
    return max(verdicts, key=ORDER.index) if verdicts else OK
