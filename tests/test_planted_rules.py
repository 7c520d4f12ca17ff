"""Rules at their exact boundaries, through the pure engine: each test fails with one planted bug.

Issue 20 planted small bugs one at a time and found that the suite stayed green. Every test here
names, in its docstring, the planted bug it guards (``planted #N``, numbered as in the issue and in
docs/mutation.md). The engine is driven as the server drives it: a client frame in, the answer
applied to the state through ``send_server`` (conftest's ``send``).
"""

from __future__ import annotations

from typing import Any

import pytest

from replay.engine.conversation import Conversation
from replay.wire import protocol as p
from replay.wire.protocol import Dialect, IdFactory

from .conftest import Script, b64, only_error, send

R = "invalid_request_error"
PCM16_BYTES_PER_MS = 48  # pcm16 at 24 kHz: the session's default input and output format
T8_MESSAGE = ("Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
              "but buffer only has {}ms of audio.")


def engine(dialect: Dialect) -> Conversation:
    return Conversation(dialect, ids=IdFactory(7))


def append(conv: Conversation, nbytes: int) -> list[dict[str, Any]]:
    return send(conv, {"type": "input_audio_buffer.append", "audio": b64(nbytes)})


def commit(conv: Conversation, event_id: str = "commit_1") -> list[dict[str, Any]]:
    return send(conv, {"type": "input_audio_buffer.commit", "event_id": event_id})


def accepted(reactions: list[dict[str, Any]]) -> bool:
    return bool(reactions) and reactions[0]["type"] == "input_audio_buffer.committed"


def truncate(item_id: str, ms: int, event_id: str = "trunc_1") -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "event_id": event_id, "item_id": item_id, "content_index": 0,
            "audio_end_ms": ms}


def audio_bytes(conv: Conversation, nbytes: int, item_id: str = "item_a", response_id: str = "resp_1") -> None:
    """Model audio of exactly ``nbytes`` (not a whole number of ms), as a recorded delta would bring it."""
    conv.send_server({"type": p.AUDIO_DELTA[conv.dialect], "response_id": response_id, "item_id": item_id,
                      "output_index": 0, "content_index": 0, "delta": b64(nbytes)})


# T8: the 100 ms bound is exclusive below (`< 100`), and counts since the last commit ----------------


DIALECTS = pytest.mark.parametrize("dialect", ["ga", "beta"])


@DIALECTS
@pytest.mark.parametrize(("nbytes", "shown"), [
    (100 * PCM16_BYTES_PER_MS - 1, "99.98"),  # one byte short: the closest the buffer gets to 99.99 ms
    (100 * PCM16_BYTES_PER_MS - 2, "99.96"),  # one pcm16 sample short
])
def test_t8_refuses_a_commit_just_under_100ms(dialect: Dialect, nbytes: int, shown: str) -> None:
    """Planted #2 (T8's bound moved to `<= 100`): the refusal side, with the 2-decimal value the server writes."""
    conv = engine(dialect)
    append(conv, nbytes)
    error = only_error(commit(conv, "commit_10"))
    assert error == {"type": R, "code": "input_audio_buffer_commit_empty", "message": T8_MESSAGE.format(shown),
                     "param": None, "event_id": "commit_10"}


@DIALECTS
@pytest.mark.parametrize("nbytes", [100 * PCM16_BYTES_PER_MS, 100 * PCM16_BYTES_PER_MS + 1,
                                    100 * PCM16_BYTES_PER_MS + 2])
def test_t8_accepts_a_commit_of_exactly_100ms_and_just_over(dialect: Dialect, nbytes: int) -> None:
    """Planted #2 (T8's bound moved from `< 100` to `<= 100`): exactly 100.00 ms must be accepted."""
    conv = engine(dialect)
    append(conv, nbytes)
    reactions = commit(conv)
    added = "conversation.item.added" if dialect == "ga" else "conversation.item.created"
    assert [r["type"] for r in reactions][:2] == ["input_audio_buffer.committed", added]
    assert reactions[0]["item_id"] == reactions[1]["item"]["id"]
    assert reactions[1]["item"]["role"] == "user"


def test_t8_bound_is_in_ms_of_the_input_format() -> None:
    """Planted #2: the bound is 100 ms whatever the format; G.711 carries 8 bytes per ms, not 48."""
    conv = engine("ga")
    send(conv, {"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}})
    append(conv, 799)
    assert only_error(commit(conv))["message"] == T8_MESSAGE.format("99.88")
    append(conv, 1)
    assert accepted(commit(conv))


@DIALECTS
def test_a_second_commit_with_nothing_new_is_refused(dialect: Dialect) -> None:
    """Planted #1 (`input_buffer_bytes` not reset after a commit): the second commit must be T8 with 0.00 ms."""
    conv = engine(dialect)
    append(conv, 150 * PCM16_BYTES_PER_MS)
    assert accepted(commit(conv, "c1"))
    error = only_error(commit(conv, "c2"))
    assert (error["message"], error["event_id"]) == (T8_MESSAGE.format("0.00"), "c2")


def test_after_a_commit_only_new_audio_counts() -> None:
    """Planted #1: 60 ms after a commit of 150 ms is 60 ms, not 210 ms; 40 ms more makes it 100 ms."""
    conv = engine("ga")
    append(conv, 150 * PCM16_BYTES_PER_MS)
    assert accepted(commit(conv))
    append(conv, 60 * PCM16_BYTES_PER_MS)
    assert only_error(commit(conv))["message"] == T8_MESSAGE.format("60.00")
    append(conv, 40 * PCM16_BYTES_PER_MS)  # the refused commit kept the buffer
    assert accepted(commit(conv))
    assert only_error(commit(conv))["message"] == T8_MESSAGE.format("0.00")


def test_the_server_vads_commit_empties_the_buffer_too() -> None:
    """Planted #1: after a VAD commit (speech_stopped), a manual commit finds an empty buffer (reference T8)."""
    conv = engine("ga")
    append(conv, 300 * PCM16_BYTES_PER_MS)
    for event in [conv.speech_started(), *conv.speech_stopped()]:
        conv.send_server(event)
    assert conv.input_buffer_bytes == 0
    assert only_error(commit(conv))["message"] == T8_MESSAGE.format("0.00")


def test_a_clear_empties_the_buffer() -> None:
    """Planted #1's sibling: input_audio_buffer.clear leaves nothing to commit."""
    conv = engine("beta")
    append(conv, 150 * PCM16_BYTES_PER_MS)
    assert [r["type"] for r in send(conv, {"type": "input_audio_buffer.clear"})] == ["input_audio_buffer.cleared"]
    assert only_error(commit(conv))["message"] == T8_MESSAGE.format("0.00")


def test_appends_count_the_whole_sessions_audio_for_vad() -> None:
    """The VAD clock (input_audio_ms) counts every append; the commit buffer only since the last commit."""
    conv = engine("ga")
    append(conv, 150 * PCM16_BYTES_PER_MS)
    commit(conv)
    append(conv, 50 * PCM16_BYTES_PER_MS)
    assert conv.input_audio_ms == 200
    assert conv.input_buffer_bytes == 50 * PCM16_BYTES_PER_MS


# T2: `audio_end_ms > produced` refuses, so the bound is inclusive --------------------------------


def t2(produced: int, requested: int) -> str:
    return f"Audio content of {produced}ms is already shorter than {requested}ms"


def audio_item(dialect: Dialect, nbytes: int) -> Conversation:
    conv = engine(dialect)
    Script(conv).response_start()
    audio_bytes(conv, nbytes)
    return conv


@DIALECTS
@pytest.mark.parametrize("ms", [99, 100])
def test_t2_allows_a_truncate_up_to_and_at_the_produced_audio(dialect: Dialect, ms: int) -> None:
    """T2's inclusive bound: a truncate at exactly the produced 100 ms (or under) is accepted."""
    conv = audio_item(dialect, 100 * PCM16_BYTES_PER_MS)
    reactions = send(conv, truncate("item_a", ms))
    assert [(r["type"], r["audio_end_ms"]) for r in reactions] == [("conversation.item.truncated", ms)]


@DIALECTS
def test_t2_refuses_one_ms_past_the_produced_audio(dialect: Dialect) -> None:
    """T2's inclusive bound from the other side: 101 ms of 100 ms produced is refused, event_id null."""
    conv = audio_item(dialect, 100 * PCM16_BYTES_PER_MS)
    error = only_error(send(conv, truncate("item_a", 101)))
    assert error == {"type": R, "code": "invalid_value", "message": t2(100, 101), "param": None, "event_id": None}


@pytest.mark.parametrize(("nbytes", "produced"), [
    (100 * PCM16_BYTES_PER_MS - 1, 99),  # 99.98 ms produced: the server holds 99 whole ms
    (100 * PCM16_BYTES_PER_MS, 100),  # 100.00 ms
    (100 * PCM16_BYTES_PER_MS + 1, 100),  # 100.02 ms
])
def test_t2_counts_whole_ms_of_the_audio_produced(nbytes: int, produced: int) -> None:
    """T2 around 100 ms of audio that is not a whole number of ms: accepted at `produced`, refused one over."""
    conv = audio_item("ga", nbytes)
    assert conv.produced_ms(conv.items["item_a"]) == produced
    assert only_error(send(conv, truncate("item_a", produced + 1)))["message"] == t2(produced, produced + 1)
    assert send(conv, truncate("item_a", produced))[0]["type"] == "conversation.item.truncated"


def test_t2_is_not_enforced_where_the_recording_was_cut_at_the_source() -> None:
    """`enforce_t2=False` (a recording whose audio was cut short): a truncate past the audio is accepted."""
    conv = Conversation("ga", ids=IdFactory(7), enforce_t2=False)
    Script(conv).response_start()
    audio_bytes(conv, 100 * PCM16_BYTES_PER_MS)
    assert send(conv, truncate("item_a", 500))[0]["type"] == "conversation.item.truncated"


def test_a_negative_audio_end_ms_is_below_the_minimum() -> None:
    """audio_end_ms 0 is a truncate; -1 is `integer_below_min_value`."""
    conv = audio_item("ga", 100 * PCM16_BYTES_PER_MS)
    error = only_error(send(conv, truncate("item_a", -1)))
    assert (error["code"], error["param"]) == ("integer_below_min_value", "audio_end_ms")
    assert error["message"] == ("Invalid 'audio_end_ms': integer below minimum value. Expected a value >= 0, "
                                "but got -1 instead.")
    assert send(conv, truncate("item_a", 0))[0]["type"] == "conversation.item.truncated"


# T11: the voice lock, on both dialects ------------------------------------------------------------


def voice_update(dialect: Dialect, voice: str, **extra: Any) -> dict[str, Any]:
    if dialect == "ga":
        return {"type": "session.update", "event_id": "upd_voice",
                "session": {"type": "realtime", "audio": {"output": {"voice": voice}}, **extra}}
    return {"type": "session.update", "event_id": "upd_voice", "session": {"voice": voice, **extra}}


def voice_of(conv: Conversation) -> str:
    if conv.dialect == "ga":
        return str(conv.session["audio"]["output"]["voice"])
    return str(conv.session["voice"])


@DIALECTS
def test_t11_another_voice_after_assistant_audio_is_refused_whole(dialect: Dialect) -> None:
    """Planted #6 (T11 removed from session.update): a new voice once assistant audio exists is refused,
    and the whole update with it (its instructions are not applied either)."""
    conv = engine(dialect)
    script = Script(conv)
    script.response_start()
    script.audio(10)
    script.done()
    error = only_error(send(conv, voice_update(dialect, "marin", instructions="be brief")))
    assert error == {"type": R, "code": "cannot_update_voice",
                     "message": "Cannot update a conversation's voice if assistant audio is present.",
                     "param": None, "event_id": "upd_voice"}
    assert voice_of(conv) == "alloy"
    assert conv.session["instructions"] != "be brief"


@DIALECTS
def test_t11_locks_from_the_first_audio_delta_while_the_response_streams(dialect: Dialect) -> None:
    """Planted #6: the lock holds from the first delta, before response.done."""
    conv = engine(dialect)
    script = Script(conv)
    script.response_start()
    assert send(conv, voice_update(dialect, "ash"))[0]["type"] == "session.updated"  # no audio yet: allowed
    script.audio(1)
    assert only_error(send(conv, voice_update(dialect, "marin")))["code"] == "cannot_update_voice"
    assert voice_of(conv) == "ash"


@DIALECTS
def test_t11_the_same_voice_or_no_voice_is_fine_after_audio(dialect: Dialect) -> None:
    """T11 fires only on a change: re-sending the voice in force, or an update without one, is accepted."""
    conv = engine(dialect)
    script = Script(conv)
    script.response_start()
    script.audio(10)
    assert send(conv, voice_update(dialect, "alloy"))[0]["type"] == "session.updated"
    no_voice = {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}} if dialect == "ga" \
        else {"type": "session.update", "session": {"instructions": "x"}}
    assert send(conv, no_voice)[0]["type"] == "session.updated"
    assert conv.session["instructions"] == "x"


@DIALECTS
def test_t11_text_only_output_does_not_lock_the_voice(dialect: Dialect) -> None:
    """Only assistant *audio* locks the voice: a text response does not."""
    conv = engine(dialect)
    script = Script(conv)
    script.response_start(part="text", modalities=["text"])
    conv.send_server({"type": p.TEXT_DELTA[dialect], "response_id": "resp_1", "item_id": "item_a",
                      "output_index": 0, "content_index": 0, "delta": "hi"})
    script.done()
    assert send(conv, voice_update(dialect, "marin"))[0]["type"] == "session.updated"
    assert voice_of(conv) == "marin"


# T12: unknown parameters, on both dialects --------------------------------------------------------


def test_t12_beta_session_update_with_an_unknown_parameter() -> None:
    """Planted #9 (the beta session's unknown-parameter check removed): `session.bogus_field` is refused."""
    conv = engine("beta")
    error = only_error(send(conv, {"type": "session.update", "event_id": "u1",
                                   "session": {"instructions": "x", "bogus_field": 1}}))
    assert error == {"type": R, "code": "unknown_parameter", "message": "Unknown parameter: 'session.bogus_field'.",
                     "param": "session.bogus_field", "event_id": "u1"}
    assert conv.session["instructions"] != "x"  # refused whole


def test_t12_beta_refuses_the_ga_shape() -> None:
    """Planted #9: a GA-shaped update sent to a beta session names its first unknown key."""
    conv = engine("beta")
    error = only_error(send(conv, {"type": "session.update", "session": {"type": "realtime"}}))
    assert (error["code"], error["param"]) == ("unknown_parameter", "session.type")
    error = only_error(send(conv, {"type": "session.update", "session": {"output_modalities": ["text"]}}))
    assert error["message"] == "Unknown parameter: 'session.output_modalities'."


def test_t12_beta_accepts_every_key_it_knows() -> None:
    """The check is not over-strict: the beta session's own keys are accepted."""
    conv = engine("beta")
    update = {"modalities": ["text"], "instructions": "x", "voice": "echo", "input_audio_format": "g711_ulaw",
              "output_audio_format": "g711_alaw", "input_audio_transcription": None, "temperature": 0.6,
              "max_response_output_tokens": 100, "speed": 1.1, "tools": [], "tool_choice": "auto",
              "turn_detection": {"type": "semantic_vad", "eagerness": "low"}}
    assert send(conv, {"type": "session.update", "session": update})[0]["type"] == "session.updated"
    assert conv.session["voice"] == "echo" and conv.session["temperature"] == 0.6


@DIALECTS
def test_t12_unknown_turn_detection_parameter(dialect: Dialect) -> None:
    """Unknown keys are checked inside turn_detection too, at the dialect's own path."""
    conv = engine(dialect)
    turn = {"type": "server_vad", "bogus": True}
    if dialect == "ga":
        event = {"type": "session.update",
                 "session": {"type": "realtime", "audio": {"input": {"turn_detection": turn}}}}
        path = "session.audio.input.turn_detection.bogus"
    else:
        event = {"type": "session.update", "session": {"turn_detection": turn}}
        path = "session.turn_detection.bogus"
    assert only_error(send(conv, event))["param"] == path


@pytest.mark.parametrize(("audio", "path"), [
    ({"bogus": 1}, "session.audio.bogus"),
    ({"output": {"bogus": 1}}, "session.audio.output.bogus"),
    ({"input": {"format": {"type": "audio/pcm", "bogus": 1}}}, "session.audio.input.format.bogus"),
])
def test_t12_ga_unknown_parameters_inside_audio(audio: dict[str, Any], path: str) -> None:
    """GA checks every level of the audio object."""
    conv = engine("ga")
    error = only_error(send(conv, {"type": "session.update", "session": {"type": "realtime", "audio": audio}}))
    assert (error["code"], error["param"], error["message"]) == ("unknown_parameter", path,
                                                                 f"Unknown parameter: '{path}'.")


# interrupt_response / create_response: the API's defaults when a field is omitted -----------------


def omitting(dialect: Dialect, conv: Conversation, **turn: Any) -> None:
    """The server announces a session whose turn_detection has only the given keys (a recording, an older API)."""
    session = p.clone(conv.session)
    detection = {"type": "server_vad", **turn}
    if dialect == "ga":
        session["audio"]["input"]["turn_detection"] = detection
    else:
        session["turn_detection"] = detection
    conv.send_server({"type": "session.updated", "session": session})


def streaming(dialect: Dialect) -> Conversation:
    conv = engine(dialect)
    Script(conv).response_start()
    Script(conv).audio(100)
    return conv


@DIALECTS
def test_interrupt_response_omitted_means_true(dialect: Dialect) -> None:
    """Planted #8 (`interrupt_response` defaulting to false when omitted): the API's default is true, so a
    barge-in cancels the response, and the snapshot a verdict is judged against says so."""
    conv = streaming(dialect)
    omitting(dialect, conv)
    assert conv.interrupts() is True
    assert conv.snapshot().interrupt_response is True
    events = conv.barge_in()
    assert events[0]["type"] == "input_audio_buffer.speech_started"
    assert events[-1]["type"] == "response.done"
    assert events[-1]["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}


@DIALECTS
def test_interrupt_response_false_is_kept(dialect: Dialect) -> None:
    """The other side of planted #8: an explicit false means no server cancel at the barge-in."""
    conv = streaming(dialect)
    omitting(dialect, conv, interrupt_response=False)
    assert conv.interrupts() is False
    assert conv.snapshot().interrupt_response is False
    assert [e["type"] for e in conv.barge_in()] == ["input_audio_buffer.speech_started"]


@DIALECTS
def test_no_turn_detection_means_no_interruption(dialect: Dialect) -> None:
    """With turn detection off there is no VAD to interrupt: false, whatever the default of the field."""
    conv = streaming(dialect)
    update = {"type": "realtime", "audio": {"input": {"turn_detection": None}}} if dialect == "ga" \
        else {"turn_detection": None}
    send(conv, {"type": "session.update", "session": update})
    assert conv.turn_detection is None
    assert conv.interrupts() is False and conv.snapshot().interrupt_response is False
    assert conv.creates_response() is False


@DIALECTS
def test_turn_detection_set_again_without_the_flags_takes_the_apis_defaults(dialect: Dialect) -> None:
    """Planted #8 through session.update: turn detection turned off, then on as `{"type": "server_vad"}` only,
    interrupts and creates responses (both default to true)."""
    conv = streaming(dialect)
    for detection in (None, {"type": "server_vad"}):
        update = {"type": "realtime", "audio": {"input": {"turn_detection": detection}}} if dialect == "ga" \
            else {"turn_detection": detection}
        assert send(conv, {"type": "session.update", "session": update})[0]["type"] == "session.updated"
    assert conv.turn_detection == {"type": "server_vad"}
    assert conv.interrupts() is True and conv.snapshot().interrupt_response is True
    assert conv.creates_response() is True


@DIALECTS
def test_create_response_omitted_means_true_and_false_is_kept(dialect: Dialect) -> None:
    """create_response defaults to true, as interrupt_response does."""
    conv = engine(dialect)
    omitting(dialect, conv)
    assert conv.creates_response() is True
    omitting(dialect, conv, create_response=False)
    assert conv.creates_response() is False


def test_a_response_being_cancelled_is_not_interrupted_twice() -> None:
    """interrupts() is false once a cancel is on its way, so a barge-in sends no second tail."""
    conv = streaming("ga")
    send(conv, {"type": "response.cancel"})  # applied: the response is done
    assert conv.interrupts() is False
    conv2 = streaming("ga")
    assert conv2.default_response is not None
    conv2.default_response.cancelling = True
    assert conv2.interrupts() is False
    assert [e["type"] for e in conv2.barge_in()] == ["input_audio_buffer.speech_started"]


def test_speech_started_is_backdated_by_the_prefix_padding() -> None:
    """speech_started's audio_start_ms is the input heard minus prefix_padding_ms (300 ms when omitted)."""
    conv = engine("ga")
    append(conv, 1000 * PCM16_BYTES_PER_MS)
    assert conv.speech_started()["audio_start_ms"] == 700
    omitting("ga", conv, prefix_padding_ms=100)
    assert conv.speech_started()["audio_start_ms"] == 900
    omitting("ga", conv)
    assert conv.speech_started()["audio_start_ms"] == 700
