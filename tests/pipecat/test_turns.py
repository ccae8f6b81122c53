"""The service's turn bookkeeping on its own: which frames an interruption leaves stale, and when a
held TTSStoppedFrame is passed on."""

from __future__ import annotations

import numpy as np
from avatar_client.feed_items import FeedFrame, FeedTurn
from avatar_pipecat.turns import Kind, Turns
from pipecat.frames.frames import TTSStoppedFrame


def frame(speaking: bool) -> FeedFrame:
    return FeedFrame(0, 0, None, None, False, np.zeros(1920, np.int16), speaking)


def test_speech_made_before_an_interruption_is_stale_until_the_engine_has_stopped() -> None:
    turns = Turns()
    first = turns.audio("ctx-1")
    turns.seen(FeedTurn(first, "started", 0))
    assert turns.kind(frame(True)) is Kind.SPEECH
    assert turns.interrupt()
    assert turns.kind(frame(True)) is Kind.STALE  # still on its way when the interruption came
    assert turns.kind(frame(True)) is Kind.STALE
    assert turns.kind(frame(False)) is Kind.IDLE  # the engine has stopped
    assert turns.kind(frame(True)) is Kind.SPEECH


def test_a_turn_begun_after_the_interruption_is_heard_even_before_an_idle_frame() -> None:
    turns = Turns()
    turns.seen(FeedTurn(turns.audio("ctx-1"), "started", 0))
    turns.interrupt()
    second = turns.begin("ctx-2")
    turns.audio("ctx-2")
    assert turns.kind(frame(True)) is Kind.STALE
    turns.seen(FeedTurn(second, "started", 1920))
    assert turns.kind(frame(True)) is Kind.SPEECH
    assert turns.context_of(turns.on_screen) == "ctx-2"


def test_the_stopped_frame_waits_for_the_avatar_and_an_interruption_drops_it() -> None:
    turns = Turns()
    turn = turns.begin("ctx-1")
    turns.audio("ctx-1")
    stop = TTSStoppedFrame(context_id="ctx-1")
    assert turns.stop(stop) == (turn, None) and turns.pending
    assert turns.seen(FeedTurn(turn, "started", 0)) is None
    assert turns.seen(FeedTurn(turn, "finished", 96000)) is stop and not turns.pending
    # A turn with no audio passes its stop frame at once; an interrupted one never.
    empty = TTSStoppedFrame()
    turns.begin(None)
    assert turns.stop(empty)[1] is empty
    turns.begin(None)
    turns.audio(None)
    turns.stop(TTSStoppedFrame())
    turns.interrupt()
    assert not turns.pending and turns.lost() == []
