"""Thousands of random and malformed events over concurrent calls, beside a live witness.

Seeded and bounded in time. The node must answer every call with a meaningful status
(never INTERNAL or UNKNOWN), log no exception, keep the witness at 1x, and return to
zero sessions.
"""

from __future__ import annotations

import asyncio
import random

import grpc
import numpy as np
import pytest

from avatar_proto import avatar_pb2 as pb

from ..support.node_process import NodeProcess
from .conftest import channel, live_witness, wait_for_active

CONVERSE = "/avatar.v1.AvatarNode/Converse"
EVENTS = 10_000
WORKERS = 4
TIME_LIMIT_S = 90.0


class Fuzzer:
    def __init__(self, seed: int, photo: bytes, avatar_id: str) -> None:
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.photo = photo
        self.avatar_id = avatar_id

    def _text(self) -> str:
        r = self.rng
        alphabet = "abcdefgh ,.!?\n\t\x00\x07\u00e9\u4e2d\U0001f600"
        length = r.choice([0, 1, 12, 80, 400, 6000])
        return "".join(r.choice(alphabet) for _ in range(length))

    def _pcm(self) -> bytes:
        r = self.rng
        n = r.choice([0, 1, 3, 160, 1600, 16000, 100_000])
        return self.np.integers(-32768, 32767, n // 2 + (n % 2), dtype=np.int16).tobytes()[:n]

    def _rate(self) -> int:
        return self.rng.choice([0, 1, 7999, 8000, 16000, 22050, 44100, 48000, 192000, 192001, 2**31, 4294967295])

    def start(self) -> pb.ClientEvent:
        r = self.rng
        avatar = r.choice(["photo", "photo", "photo", "id", "bad-id", "garbage", "none"])
        kw: dict = {}
        if avatar == "photo":
            kw["image"] = self.photo
        elif avatar == "id":
            kw["avatar_id"] = self.avatar_id
        elif avatar == "bad-id":
            kw["avatar_id"] = self._text()[:200]
        elif avatar == "garbage":
            kw["image"] = bytes(self.np.integers(0, 256, r.choice([0, 10, 5000]), dtype=np.uint8))
        output = pb.OutputFormat(
            width=r.choice([0, 0, 320, 321, 64, 1920, 4000]),
            height=r.choice([0, 0, 240, 63, 1080]),
            fps=r.choice([0.0, 0.0, 25.0, 10.0, 5.0, 0.5, 60.0, 1e9, float("nan")]),
            bitrate_kbps=r.choice([0, 0, 99, 800, 4294967295]),
            keyframe_interval=r.choice([0, 0, 1, 50, 2**31]),
            audio_sample_rate=r.choice([0, 0, 16000, 12345]),
            codec=r.choice([0, 0, 1, 7]),
        )
        return pb.ClientEvent(start=pb.StartSession(
            **kw, output=output, engine=r.choice(["", "", "portrait", "nope"]),
            voice=r.choice(["", "", "EN-us", "xx", "en-us+f3"]),
            mode=r.choice([0, 1, 2, 2, 9]), stats_interval_ms=r.choice([0, 0, 1, 100]),
            framing=r.choice([0, 1, 2, 5]), prompt=r.choice(["", "smile", "p" * 3000]),
        ))

    def event(self) -> pb.ClientEvent:
        r = self.rng
        kind = r.choice(["speech", "speech", "speech", "text", "listen", "control", "control", "end", "start", "empty"])
        if kind == "speech":
            return pb.ClientEvent(speech_audio=pb.SpeechAudio(
                pcm=self._pcm(), sample_rate=self._rate(), channels=r.choice([0, 1, 1, 2, 9]),
                end_of_turn=r.random() < 0.3, turn_id=r.choice(["", "t", "x" * 500])))
        if kind == "text":
            return pb.ClientEvent(text=pb.SpeakText(text=self._text(), voice=r.choice(["", "fr", "zz"])))
        if kind == "listen":
            return pb.ClientEvent(listen_audio=pb.ListenAudio(pcm=self._pcm(), sample_rate=self._rate(),
                                                              channels=r.choice([0, 1, 3])))
        if kind == "control":
            which = r.choice(["interrupt", "behaviour", "prompt", "none"])
            if which == "interrupt":
                return pb.ClientEvent(control=pb.Control(interrupt=pb.Interrupt()))
            if which == "behaviour":
                return pb.ClientEvent(control=pb.Control(behaviour=pb.Behaviour(name=r.choice(["nod", "smile", self._text()]))))
            if which == "prompt":
                return pb.ClientEvent(control=pb.Control(prompt=pb.SetPrompt(prompt=self._text())))
            return pb.ClientEvent(control=pb.Control())
        if kind == "end":
            return pb.ClientEvent(end=pb.EndSession(discard_pending=r.random() < 0.5))
        if kind == "start":
            return self.start()
        return pb.ClientEvent()

    def wire(self, event: pb.ClientEvent) -> bytes:
        """Serialised, and now and then damaged (flipped bytes, cut short, or pure noise)."""
        data = event.SerializeToString()
        roll = self.rng.random()
        if roll < 0.05:
            return bytes(self.np.integers(0, 256, self.rng.choice([1, 7, 64]), dtype=np.uint8))
        if roll < 0.1 and data:
            cut = self.rng.randrange(len(data))
            return data[:cut]
        if roll < 0.15 and data:
            b = bytearray(data)
            b[self.rng.randrange(len(b))] ^= 0xFF
            return bytes(b)
        return data


async def _one_call(
    target: str, fuzzer: Fuzzer, sent: list[int], codes: list[grpc.StatusCode], details: list[str]
) -> None:
    r = fuzzer.rng
    messages = [fuzzer.wire(fuzzer.start())] + [fuzzer.wire(fuzzer.event()) for _ in range(r.randint(0, 40))]
    sent[0] += len(messages)
    hang_up = r.random() < 0.3
    half_close = r.random() < 0.7

    async def requests():  # type: ignore[no-untyped-def]
        for message in messages:
            if r.random() < 0.2:
                await asyncio.sleep(r.uniform(0, 0.03))
            yield message
        if not half_close:
            await asyncio.sleep(r.uniform(0.1, 0.6))

    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        call = ch.stream_stream(CONVERSE, request_serializer=lambda b: b, response_deserializer=lambda b: b)(requests())

        async def read() -> None:
            async for _ in call:
                pass

        try:
            if hang_up:
                await asyncio.wait_for(read(), r.uniform(0.05, 0.8))
            else:
                await asyncio.wait_for(read(), 30)
        except asyncio.TimeoutError:
            call.cancel()
            return
        except grpc.aio.AioRpcError:
            pass
        code = await call.code()
        codes.append(code)
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            details.append(f"{code.name}: {await call.details()}")


#: grpcio's asyncio client replaces the node's status with this when one of its own writes
#: fails because the node had already ended the call (grpc/grpc#36066). The node reads what a
#: client has in flight before it ends a call, which makes this rare, but a client that keeps
#: writing after an error can still meet it; it is the client library's status, not the node's.
CLIENT_LIBRARY_INTERNAL = "INTERNAL: Internal error from Core"


@pytest.mark.slow
async def test_fuzzed_calls_beside_a_live_witness(photo):
    node = NodeProcess("--max-sessions", "8")
    try:
        async with channel(node.target) as stub:
            avatar_id = (await stub.PrepareAvatar(pb.PrepareAvatarRequest(image=photo))).avatar_id
        sent, codes, details = [0], [], []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIME_LIMIT_S

        async def worker(seed: int) -> None:
            fuzzer = Fuzzer(seed, photo, avatar_id)
            while sent[0] < EVENTS and loop.time() < deadline:
                await _one_call(node.target, fuzzer, sent, codes, details)

        async with live_witness(node.target, photo):
            await asyncio.gather(*(worker(seed) for seed in range(WORKERS)))
        assert sent[0] >= EVENTS, f"only {sent[0]} events in {TIME_LIMIT_S:g} s"
        from_node = [d for d in details if d != CLIENT_LIBRARY_INTERNAL]
        assert not from_node, f"{len(from_node)} calls ended badly, e.g. {sorted(set(from_node))[:5]}"
        assert len(details) <= 0.02 * len(codes), f"{len(details)} of {len(codes)} calls hit grpc/grpc#36066"
        assert await wait_for_active(node.target, 0, within=3.0) == 0, "sessions were left behind"
        print(f"fuzz: {sent[0]} events over {len(codes)} completed calls; codes "
              f"{sorted({c.name for c in codes})}; client-library INTERNAL {len(details)}")
    finally:
        assert node.terminate() == 0
    node.assert_clean_log()
