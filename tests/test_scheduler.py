"""The replay scheduler: gates, timing, divergence, the cut. Pure, so time is passed in."""

from __future__ import annotations

from replay.cassette import Frame
from replay.scheduler import ReplayScheduler, diff_events


def frames() -> list[Frame]:
    return [
        Frame(0.0, "server", {"type": "session.created"}),
        Frame(0.1, "client", {"type": "session.update", "session": {"type": "realtime", "instructions": "a"}}),
        Frame(0.35, "server", {"type": "session.updated"}),
        Frame(0.4, "client", {"type": "input_audio_buffer.append", "audio": "AAAA"}),
        Frame(0.5, "client", {"type": "response.create", "event_id": "e1"}),
        Frame(0.78, "server", {"type": "response.created"}),
        Frame(0.98, "server", {"type": "response.output_audio.delta"}),
        Frame(1.5, "server", {"type": "response.done"}),
    ]


def types(released: list[tuple[int, Frame]]) -> list[str | None]:
    return [frame.type for _, frame in released]


def test_server_frames_wait_for_their_gate_then_keep_recorded_offsets() -> None:
    s = ReplayScheduler(frames(), speed=1.0)
    s.start(10.0)
    assert types(s.due(10.0)) == ["session.created"]
    assert s.due(99.0) == []  # nothing more until the client sends session.update
    assert s.receive({"type": "session.update", "session": {"type": "realtime", "instructions": "a"}}, 20.0).scripted
    assert s.due(20.2) == []
    assert types(s.due(20.25)) == ["session.updated"]
    s.receive({"type": "response.create", "event_id": "whatever"}, 30.0)
    assert s.next_deadline() == 30.28
    assert types(s.due(30.5)) == ["response.created", "response.output_audio.delta"]
    assert types(s.due(31.0)) == ["response.done"]
    assert s.exhausted


def test_appends_are_not_gates_and_speed_zero_releases_at_once() -> None:
    s = ReplayScheduler(frames(), speed=0)
    s.start(0.0)
    s.receive({"type": "session.update", "session": {"type": "realtime", "instructions": "a"}}, 0.0)
    s.receive({"type": "response.create"}, 0.0)
    assert types(s.due(0.0)) == ["session.created", "session.updated", "response.created",
                                 "response.output_audio.delta", "response.done"]


def test_divergent_ack_is_answered_by_the_engine_and_the_recorded_ack_dropped() -> None:
    s = ReplayScheduler(frames(), speed=0)
    s.start(0.0)
    decision = s.receive({"type": "session.update", "session": {"type": "realtime", "instructions": "b"}}, 0.0)
    assert not decision.scripted and decision.divergence is not None
    assert decision.divergence.diff == (("session.instructions", "a", "b"),)
    assert "session.instructions: recorded 'a', got 'b'" in decision.divergence.describe()
    assert types(s.due(0.0)) == ["session.created"]  # the recorded session.updated is gone


def test_lenient_skips_to_a_later_gate_of_the_same_type() -> None:
    s = ReplayScheduler(frames(), speed=0)
    s.start(0.0)
    decision = s.receive({"type": "response.create"}, 0.0)
    assert decision.scripted
    assert [d.kind for d in s.divergences] == ["skipped"]
    assert types(s.due(0.0)) == ["session.created", "response.created", "response.output_audio.delta",
                                 "response.done"]


def test_strict_fails_on_any_mismatch() -> None:
    s = ReplayScheduler(frames(), speed=0, strict=True)
    s.start(0.0)
    assert s.receive({"type": "response.create"}, 0.0).fail
    s = ReplayScheduler(frames(), speed=0, strict=True)
    assert s.receive({"type": "conversation.item.delete", "item_id": "x"}, 0.0).fail


def test_unscripted_frames_go_to_the_engine() -> None:
    s = ReplayScheduler(frames(), speed=0)
    decision = s.receive({"type": "conversation.item.truncate", "item_id": "a"}, 0.0)
    assert not decision.scripted and decision.divergence is not None
    assert decision.divergence.kind == "unscripted"


def test_cut_stops_the_replay_after_its_frame() -> None:
    s = ReplayScheduler(frames(), speed=0, stop_after=5)
    s.start(0.0)
    s.receive({"type": "session.update", "session": {"type": "realtime", "instructions": "a"}}, 0.0)
    s.receive({"type": "response.create"}, 0.0)
    assert types(s.due(0.0))[-1] == "response.created"
    assert s.cut_reached and s.due(5.0) == [] and s.next_deadline() is None
    assert not s.receive({"type": "response.create"}, 1.0).scripted  # after the cut the engine answers


def test_diff_ignores_volatile_paths() -> None:
    recorded = {"type": "conversation.item.create", "event_id": "a", "item": {"id": "x", "type": "message"}}
    got = {"type": "conversation.item.create", "event_id": "b", "item": {"id": "y", "type": "message"}}
    assert diff_events(recorded, got) == []
    assert diff_events(recorded, got, ignore=()) == [("event_id", "a", "b"), ("item.id", "x", "y")]


def back_to_back() -> list[Frame]:
    """A client that sent item.create and response.create together: the item's acks come later."""
    user = {"id": "item_rec", "type": "message", "role": "user", "status": "completed", "content": []}
    return [
        Frame(0.0, "server", {"type": "session.created"}),
        Frame(0.1, "client", {"type": "conversation.item.create",
                              "item": {"type": "message", "role": "user", "content": [{"type": "input_text"}]}}),
        Frame(0.1, "client", {"type": "response.create"}),
        Frame(0.2, "server", {"type": "conversation.item.added", "item": user}),
        Frame(0.2, "server", {"type": "conversation.item.done", "item": user}),
        Frame(0.3, "server", {"type": "response.created"}),
        Frame(0.4, "server", {"type": "conversation.item.added", "item": {"id": "item_asst", "type": "message",
                                                                          "role": "assistant"}}),
    ]


def test_acks_are_found_by_what_they_answer_not_by_position() -> None:
    s = ReplayScheduler(back_to_back(), speed=0)
    s.start(0.0)
    decision = s.receive({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                       "content": [{"type": "input_text",
                                                                                    "text": "other"}]}}, 0.0)
    assert not decision.scripted  # the engine acknowledges the client's own item
    s.receive({"type": "response.create"}, 0.0)
    released = s.due(0.0)
    assert [f.type for _, f in released] == ["session.created", "response.created", "conversation.item.added"]
    assert released[-1][1].event["item"]["role"] == "assistant"  # type: ignore[index]


def test_an_item_id_the_client_chose_is_answered_by_the_engine() -> None:
    s = ReplayScheduler(back_to_back(), speed=0)
    s.start(0.0)
    event = {"type": "conversation.item.create",
             "item": {"id": "my_own_id", "type": "message", "role": "user", "content": [{"type": "input_text"}]}}
    decision = s.receive(event, 0.0)
    assert not decision.scripted and decision.divergence is None  # not a divergence, even in strict mode
    s.receive({"type": "response.create"}, 0.0)
    assert "item_rec" not in str([f.event for _, f in s.due(0.0)])
