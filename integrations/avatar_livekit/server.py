"""`avatar-livekit worker`: the node-mode avatar worker as a LiveKit Agents worker.

It registers with the LiveKit server under its own agent name, so LiveKit's dispatch starts
one job per room that asks for an avatar (through `AvatarSession(mode="node")`), spreads
rooms over every worker running, and sees each worker's load. A job joins the room as the
avatar participant, renders through the avatar node, and leaves when the agent is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

import grpc

from .errors import AvatarLiveKitError
from .feed_renderer import FeedRenderer
from .job import DEFAULT_WORKER_NAME, AvatarJobRequest, avatar_token
from .room_session import RoomSession
from .worker import AvatarWorker

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    node: str  # the avatar node, host:port
    node_token: str = ""
    node_credentials: grpc.ChannelCredentials | None = None  # TLS to the node; None is plaintext
    agent_name: str = DEFAULT_WORKER_NAME
    default_image: bytes = b""  # for requests that bring no photo
    url: str = ""
    api_key: str = ""
    api_secret: str = ""
    #: Leave a room once the agent has been gone this long.
    agent_gone_s: float = 60.0
    http_port: int = 0
    load_threshold: float = 0.75

    @classmethod
    def from_env(cls, node: str, **kwargs: object) -> WorkerConfig:
        config = cls(node=node, **kwargs)  # type: ignore[arg-type]
        config.url = config.url or os.environ.get("LIVEKIT_URL", "")
        config.api_key = config.api_key or os.environ.get("LIVEKIT_API_KEY", "")
        config.api_secret = config.api_secret or os.environ.get("LIVEKIT_API_SECRET", "")
        missing = [name for name, value in (("LIVEKIT_URL", config.url), ("LIVEKIT_API_KEY", config.api_key),
                                            ("LIVEKIT_API_SECRET", config.api_secret)) if not value]
        if missing:
            raise AvatarLiveKitError(f"set {', '.join(missing)} (the LiveKit server this worker serves)")
        if not config.node:
            raise AvatarLiveKitError("give the avatar node to render on: --node HOST:PORT (or AVATAR_NODE)")
        return config


async def run_avatar_job(request: AvatarJobRequest, room_name: str, config: WorkerConfig) -> str:
    """Serve one dispatch: join as the avatar, render on the node, until the agent is gone."""

    given = [request.token] if request.token else []

    def token() -> str:
        """The agent's token first; a fresh one of the same shape for every rejoin."""
        if given:
            return given.pop()
        return avatar_token(config.api_key, config.api_secret, room=room_name, identity=request.avatar_identity,
                            agent_identity=request.agent_identity, name=request.avatar_name)

    renderer = await FeedRenderer.open_node(config.node, config.node_token or None, config.node_credentials,
                                            request.session_spec(config.default_image))
    worker = AvatarWorker(renderer, agent_identity=request.agent_identity)

    async def joined(room: object, first: bool) -> None:
        if first:
            await worker.start(room)
        else:
            await worker.attach(room)

    session = RoomSession(config.url, token, on_joined=joined, watch_identity=request.agent_identity,
                          gone_after_s=config.agent_gone_s)
    try:
        stay = asyncio.ensure_future(session.run())
        stopped = asyncio.ensure_future(worker.wait_stopped())
        await asyncio.wait({stay, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stay, stopped):
            task.cancel()
        results = await asyncio.gather(stay, stopped, return_exceptions=True)
        return results[0] if isinstance(results[0], str) else "the avatar stopped"
    finally:
        await worker.aclose()  # also closes the renderer, its node session and client


def serve(config: WorkerConfig) -> None:
    """Run the worker until SIGINT/SIGTERM (then finish the rooms it serves)."""
    from livekit.agents import AgentServer, JobContext, JobExecutorType, JobRequest

    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,  # a job is light: decode, convert, publish
        ws_url=config.url, api_key=config.api_key, api_secret=config.api_secret,
        port=config.http_port, load_threshold=config.load_threshold,
    )

    async def accept(request: JobRequest) -> None:
        try:
            avatar = AvatarJobRequest.from_json(request.job.metadata)
        except AvatarLiveKitError as exc:
            log.error("refusing a job in room %s: %s", request.room.name, exc)
            await request.reject()
            return
        # The job's own participant never joins: the avatar joins with its own token.
        await request.accept(identity=f"{avatar.avatar_identity}-job", name="avatar worker")

    @server.rtc_session(agent_name=config.agent_name, on_request=accept)
    async def entrypoint(ctx: JobContext) -> None:
        request = AvatarJobRequest.from_json(ctx.job.metadata)
        reason = await run_avatar_job(request, ctx.job.room.name, config)
        log.info("avatar for %s in %s done: %s", request.agent_identity, ctx.job.room.name, reason)
        ctx.shutdown(reason)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = asyncio.ensure_future(server.run())
        await asyncio.wait({running, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await server.drain()
            await server.aclose()
        await asyncio.gather(running, return_exceptions=True)

    asyncio.run(main())
