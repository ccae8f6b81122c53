"""A Pipecat agent with a talking avatar, served to a browser over Pipecat's SmallWebRTC transport.

    pip install -e ".[pipecat]" && pip install --no-deps "pipecat-ai>=1.14,<1.15"
    python examples/pipecat_agent.py                         # the avatar renders in this process
    python examples/pipecat_agent.py --node 127.0.0.1:50051  # ...or on an avatar node (avatar-node serve)

Open http://127.0.0.1:7860, type a sentence, and the avatar says it. The voice here is espeak-ng
behind a few lines that act as a Pipecat TTS (`SpokenText`); in a real agent, put your STT, LLM
and TTS services in front of the avatar instead:

    Pipeline([transport.input(), stt, user_aggregator, llm, tts, avatar, transport.output(),
              assistant_aggregator])

The transport's video size and rate, and its audio rate, are the avatar's.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
from aiohttp import web
from avatar_client import tls_credentials
from avatar_pipecat import AvatarVideoService, NodeAddress
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

PAGE = Path(__file__).with_name("pipecat_page.html")
CHUNK_MS = 20


class SpokenText(FrameProcessor):
    """Stands in for a TTS service: each TTSSpeakFrame is spoken by espeak-ng and pushed the way a
    Pipecat TTS pushes it (TTSStartedFrame, 20 ms TTSAudioRawFrames, TTSStoppedFrame)."""

    def __init__(self) -> None:
        super().__init__()
        from avatar_node.speech.tts import SpeechSynthesizer

        self._synth = SpeechSynthesizer()
        self._turns = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TTSSpeakFrame):
            await self.push_frame(frame, direction)
            return
        clip = await asyncio.to_thread(self._synth.synthesize, frame.text)
        samples = np.asarray(clip.samples, np.int16)
        self._turns += 1
        context = f"typed-{self._turns}"
        await self.push_frame(TTSStartedFrame(context_id=context))
        step = clip.sample_rate * CHUNK_MS // 1000
        for start in range(0, len(samples), step):
            pcm = samples[start : start + step].tobytes()
            await self.push_frame(TTSAudioRawFrame(pcm, clip.sample_rate, 1, context_id=context))
        await self.push_frame(TTSStoppedFrame(context_id=context))

    async def cleanup(self) -> None:
        await super().cleanup()
        self._synth.close()


def make_avatar(args: argparse.Namespace) -> AvatarVideoService:
    photo = Path(args.photo).read_bytes() if args.photo else _sample_photo()
    node = None
    if args.node:
        credentials = tls_credentials(ca=args.ca) if args.tls or args.ca else None
        node = NodeAddress(args.node, args.token, credentials)
    return AvatarVideoService(photo=photo, node=node, engine=args.engine, width=args.width, height=args.height,
                              fps=args.fps)


def _sample_photo() -> bytes:
    from importlib import resources

    return resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()


async def run_bot(connection: SmallWebRTCConnection, args: argparse.Namespace) -> None:
    """One pipeline for one browser: typed text -> voice -> avatar -> the browser, until it leaves."""
    transport = SmallWebRTCTransport(connection, TransportParams(
        audio_in_enabled=False, audio_out_enabled=True, audio_out_sample_rate=48000,
        video_out_enabled=True, video_out_width=args.width, video_out_height=args.height,
        video_out_framerate=args.fps,
    ))
    pipeline = Pipeline([transport.input(), SpokenText(), make_avatar(args), transport.output()])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_out_sample_rate=48000))

    @transport.event_handler("on_app_message")
    async def on_app_message(transport: SmallWebRTCTransport, message: object, sender: str) -> None:
        if isinstance(message, dict) and message.get("type") == "say" and str(message.get("text", "")).strip():
            await worker.queue_frame(TTSSpeakFrame(str(message["text"])))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport: SmallWebRTCTransport, connection: SmallWebRTCConnection) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def make_app(args: argparse.Namespace) -> web.Application:
    bots: set[asyncio.Task[None]] = set()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(), content_type="text/html")

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])
        bot = asyncio.create_task(run_bot(connection, args))
        bots.add(bot)
        bot.add_done_callback(bots.discard)
        return web.json_response(connection.get_answer())

    async def close_bots(app: web.Application) -> None:
        for bot in list(bots):
            bot.cancel()
        await asyncio.gather(*bots, return_exceptions=True)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/api/offer", offer)
    app.on_shutdown.append(close_bots)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--photo", help="the avatar's photo (default: the sample portrait)")
    parser.add_argument("--node", help="HOST:PORT of an avatar node (default: render in this process)")
    parser.add_argument("--token", help="the node's token")
    parser.add_argument("--tls", action="store_true", help="the node serves TLS (system CAs)")
    parser.add_argument("--ca", help="the CA certificate that signed the node's (implies --tls)")
    parser.add_argument("--engine", default="", help="the avatar engine (default: the node's, or portrait)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=25.0)
    args = parser.parse_args()
    logger.info(f"open http://{args.host}:{args.port} in a browser")
    web.run_app(make_app(args), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
