"""Sessions over a real gRPC stream: one clock, idle frames, barge-in, render vs live."""

from __future__ import annotations

import asyncio

import av
import numpy as np

from avatar_proto import avatar_pb2 as pb

from .conftest import Call, channel, start_event, tone

FRAME_TICKS = 48000 // 25  # the default clock rate over the default fps


def _check_one_clock(call: Call) -> None:
    videos, audios = call.of("video"), call.of("audio")
    assert len(videos) == len(audios)
    for k, (v, a) in enumerate(zip(videos, audios)):
        assert v.pts == a.pts == v.frame_index * FRAME_TICKS
        assert len(a.pcm) == 2 * FRAME_TICKS and v.duration == FRAME_TICKS
    indices = [v.frame_index for v in videos]
    assert indices == list(range(len(indices)))


def _decode(call: Call) -> list[np.ndarray]:
    codec = av.CodecContext.create("h264", "r")
    frames = []
    for v in call.of("video"):  # each packet is one whole access unit
        frames += [f.to_ndarray(format="rgb24") for f in codec.decode(av.Packet(v.data))]
    frames += [f.to_ndarray(format="rgb24") for f in codec.decode(None)]
    return frames


async def test_render_text_has_the_speech_length_and_one_clock(node, photo):
    async with channel(node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, live=False))
        call.send(text=pb.SpeakText(text="Hello, I am your avatar.", turn_id="greeting"))
        call.send(end=pb.EndSession())
        call.close()
        call.open()
        await call.read_all()
    ready = call.of("ready")[0]
    assert ready.clock_rate == 48000 and ready.output.width == 320 and ready.output.height == 240
    turns = call.of("turn")
    kinds = [(t.turn_id, t.kind) for t in turns]
    assert kinds == [
        ("greeting", pb.TurnEvent.KIND_QUEUED),
        ("greeting", pb.TurnEvent.KIND_STARTED),
        ("greeting", pb.TurnEvent.KIND_FINISHED),
    ]
    finished = turns[-1]
    assert not finished.interrupted and finished.played_ms == finished.duration_ms > 500
    frames = call.of("video")
    assert abs(len(frames) * 40 - finished.duration_ms) <= 40
    _check_one_clock(call)
    speech = np.frombuffer(b"".join(a.pcm for a in call.of("audio")), np.int16)
    assert np.abs(speech).max() > 1000  # real speech, not silence
    assert frames[0].keyframe and all(f.speaking for f in frames)
    decoded = _decode(call)
    assert len(decoded) == len(frames) and decoded[0].shape == (240, 320, 3)
    ended = call.of("ended")[0]
    assert ended.frames == len(frames)


async def test_live_idle_never_stalls(node, photo):
    async with channel(node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo))
        call.open()
        loop = asyncio.get_running_loop()
        await call.read_until(lambda e: e.WhichOneof("event") == "video")
        t0 = loop.time()
        await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.frame_index == 25)
        elapsed = loop.time() - t0
        call.send(end=pb.EndSession())
        call.close()
        await call.read_all()
    assert 0.8 <= elapsed <= 1.3, f"25 idle frames took {elapsed:.2f} s, expected ~1 s at 1x"
    assert not any(v.speaking for v in call.of("video"))
    assert all(not any(a.pcm) for a in call.of("audio"))
    _check_one_clock(call)


async def test_interrupt_stops_at_the_next_frame_and_reports_played_ms(node, photo):
    async with channel(node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo))
        call.send(text=pb.SpeakText(text="This is a long sentence that will be interrupted well before "
                                         "it reaches its end, so the rest is never heard.", turn_id="long"))
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.speaking
                              and len([v for v in call.of("video") if v.speaking]) >= 20)
        speaking_before = len([v for v in call.of("video") if v.speaking])
        call.send(control=pb.Control(interrupt=pb.Interrupt()))
        finished = await call.read_until(
            lambda e: e.WhichOneof("event") == "turn" and e.turn.kind == pb.TurnEvent.KIND_FINISHED
        )
        # Let a second of idle frames arrive, then end.
        last = call.of("video")[-1].frame_index
        await call.read_until(lambda e: e.WhichOneof("event") == "video" and e.video.frame_index >= last + 25)
        call.send(end=pb.EndSession())
        call.close()
        await call.read_all()
    videos = call.of("video")
    speaking = [v for v in videos if v.speaking]
    # At most the frame in flight when the interrupt arrived follows it.
    assert len(speaking) - speaking_before <= 2, (speaking_before, len(speaking))
    last_speaking = speaking[-1].frame_index
    audios = {a.pts: a.pcm for a in call.of("audio")}
    after = [v for v in videos if v.frame_index > last_speaking]
    assert len(after) >= 25 and not any(v.speaking for v in after)
    assert all(not any(audios[v.pts]) for v in after), "speech audio after the interrupt"
    turn = finished.turn
    assert turn.turn_id == "long" and turn.interrupted
    # Each speaking frame is a whole 40 ms of the turn (it was cut mid-sentence): exact, not +-1 frame.
    assert turn.played_ms == len(speaking) * 40, (turn.played_ms, len(speaking))
    assert turn.duration_ms > turn.played_ms + 1000
    _check_one_clock(call)


async def test_streamed_audio_underrun_keeps_sync(node, photo):
    """A client sending speech slower than real time: silence is inserted, sync holds."""
    speech = tone(1.0)
    async with channel(node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo, stats_interval_ms=0))
        call.open()
        await call.read_until(lambda e: e.WhichOneof("event") == "video")
        chunk = 1600  # 100 ms at 16 kHz, sent every 150 ms
        for i in range(0, len(speech), chunk):
            call.send(speech_audio=pb.SpeechAudio(pcm=speech[i : i + chunk].tobytes(), sample_rate=16000))
            await asyncio.sleep(0.15)
        call.send(speech_audio=pb.SpeechAudio(sample_rate=16000, end_of_turn=True))
        call.send(end=pb.EndSession())
        call.close()
        await call.read_all()
    stats = call.of("stats")[-1]
    assert stats.speech_underruns > 0
    _check_one_clock(call)
    finished = [t for t in call.of("turn") if t.kind == pb.TurnEvent.KIND_FINISHED][0]
    assert not finished.interrupted and abs(finished.played_ms - 1000) <= 1
    heard = np.frombuffer(b"".join(a.pcm for a in call.of("audio")), np.int16)
    assert np.count_nonzero(heard) >= 0.9 * 48000  # every sample of the second of speech came out


async def test_unknown_behaviour_is_reported_not_fatal(node, photo):
    async with channel(node.target) as stub:
        call = Call(stub)
        call.send(**start_event(photo))
        call.send(control=pb.Control(behaviour=pb.Behaviour(name="backflip")))
        call.send(end=pb.EndSession())
        call.close()
        call.open()
        await call.read_all()
    notices = call.of("notice")
    assert notices and notices[0].code == pb.NOTICE_CODE_UNKNOWN_BEHAVIOUR and "backflip" in notices[0].message
    assert call.of("ended")
