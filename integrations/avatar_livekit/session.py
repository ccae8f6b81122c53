"""`AvatarSession`: the avatar plugin for LiveKit Agents, used like the other avatar plugins.

    avatar = AvatarSession(image="me.jpg")                      # local mode: renders in this process
    await avatar.start(session, room=ctx.room)                  # before session.start(...)
    await session.start(agent=MyAgent(), room=ctx.room)
    ...
    await avatar.aclose()

Local mode publishes the avatar's video and synchronized speech from the agent's own
participant. Node mode (`mode="node"`) asks an `avatar-livekit worker` to join the room as
a participant of its own, which renders through an avatar node and publishes on the agent's
behalf; the agent's speech reaches it over LiveKit data streams.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from livekit import rtc
from livekit.agents.voice.avatar import AvatarSession as AgentsAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput

from .agent_output import AvatarAudioOutput
from .errors import AvatarLiveKitError, check_video_format
from .job import DEFAULT_WORKER_NAME, AvatarJobRequest, avatar_token
from .room_avatar import RoomAvatar

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from avatar_node.pipeline import AvatarRuntime

log = logging.getLogger(__name__)

Mode = Literal["local", "node"]
#: Largest photo sent along with a dispatch; larger ones: prepare them on the node (avatar_id).
MAX_INLINE_IMAGE_BYTES = 256 * 1024

#: Starts the worker for a request: (request, room name) -> an id to cancel it by, or "".
Dispatcher = Callable[[AvatarJobRequest, str], Awaitable[str]]


def load_photo(image: str | Path | bytes) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    path = Path(image)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AvatarLiveKitError(f"cannot read the avatar photo {path}: {exc.strerror or exc}") from None


class AvatarSession(AgentsAvatarSession):
    def __init__(
        self,
        *,
        image: str | Path | bytes | None = None,
        avatar_id: str = "",
        mode: Mode = "local",
        engine: str = "",
        width: int = 848,
        height: int = 480,
        fps: float = 0.0,
        sample_rate: int = 48000,
        framing: str = "auto",
        prompt: str = "",
        runtime: AvatarRuntime | None = None,
        worker_name: str = DEFAULT_WORKER_NAME,
        avatar_identity: str = "",
        avatar_name: str = "Avatar",
        livekit_url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        """
        Args:
            image: the reference photo (a path or its bytes).
            avatar_id: a photo already prepared on the node (node mode) or the runtime (local mode).
            mode: "local" renders in this process; "node" hands rendering to `avatar-livekit worker`.
            engine: the engine to render with ("" = portrait, the CPU engine, in local mode; the
                node's default in node mode).
            width, height, fps: the published video (width a multiple of 4); fps 0 publishes at
                the engine's own rate (25 for portrait, 16 for livetalk).
            runtime: local mode: an `AvatarRuntime` to share between sessions (one is made if absent).
            worker_name: node mode: the agent name the worker registered with.
            avatar_identity, avatar_name: node mode: the avatar participant.
            livekit_url, api_key, api_secret: node mode: default to LIVEKIT_URL / LIVEKIT_API_KEY /
                LIVEKIT_API_SECRET, used to mint the avatar's token and dispatch the worker.
            dispatcher: node mode: how to start the worker (default: LiveKit's agent dispatch).
        """
        super().__init__()
        if mode not in ("local", "node"):
            raise AvatarLiveKitError(f"mode must be 'local' or 'node', not {mode!r}")
        if image is None and not avatar_id and mode == "local":
            raise AvatarLiveKitError("give the avatar a photo: image='me.jpg' (or avatar_id= of a prepared one)")
        check_video_format(width, height, fps)
        self._mode: Mode = mode
        self._photo = load_photo(image) if image is not None else None
        self._avatar_id = avatar_id
        self._engine = engine
        self._width, self._height, self._fps, self._sample_rate = width, height, fps, sample_rate
        self._framing, self._prompt = framing, prompt
        self._runtime = runtime
        self._worker_name = worker_name
        self._avatar_name = avatar_name
        self._wanted_identity = avatar_identity
        self._identity = avatar_identity
        self._livekit_url = livekit_url
        self._api_key = api_key
        self._api_secret = api_secret
        self._dispatcher = dispatcher
        self._dispatch_id = ""
        self._dispatch_room = ""
        self._avatar: RoomAvatar | None = None
        self._closing: asyncio.Future[None] | None = None

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def avatar_identity(self) -> str:
        """The participant that publishes the avatar: the agent itself in local mode."""
        return self._identity

    @property
    def provider(self) -> str:
        return "avatar-node"

    @property
    def room_avatar(self) -> RoomAvatar | None:
        """Local mode: the renderer and tracks publishing in this process."""
        return self._avatar

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:  # type: ignore[override]
        if self._mode == "local":
            self._identity = room.local_participant.identity
            await super().start(agent_session, room)
            await self._start_local(agent_session, room)
        else:
            self._identity = self._wanted_identity or f"avatar-{room.local_participant.identity}"
            await super().start(agent_session, room)
            await self._start_node(agent_session, room)

    async def _start_local(self, agent_session: AgentSession, room: rtc.Room) -> None:
        from avatar_client import SessionSpec

        from .feed_renderer import FeedRenderer

        spec = SessionSpec(
            photo=self._photo, avatar_id="" if self._photo is not None else self._avatar_id, engine=self._engine,
            width=self._width, height=self._height, fps=self._fps, audio_sample_rate=self._sample_rate,
            framing=self._framing, prompt=self._prompt,
        )
        renderer = await FeedRenderer.open_runtime(spec, runtime=self._runtime)
        avatar = RoomAvatar(renderer)
        self._avatar = avatar
        output = AvatarAudioOutput(avatar)
        try:
            await avatar.start(room)
        except BaseException:
            await avatar.aclose()
            self._avatar = None
            raise
        agent_session.output.audio = output

    async def _start_node(self, agent_session: AgentSession, room: rtc.Room) -> None:
        agent_identity = room.local_participant.identity
        request = AvatarJobRequest(
            agent_identity=agent_identity,
            avatar_identity=self._identity,
            avatar_name=self._avatar_name,
            avatar_id=self._avatar_id,
            image=self._inline_photo(),
            engine=self._engine,
            width=self._width,
            height=self._height,
            fps=self._fps,
            sample_rate=self._sample_rate,
            prompt=self._prompt,
        )
        if self._dispatcher is not None:
            self._dispatch_id = await self._dispatcher(request, room.name)
        else:
            url, key, secret = self._credentials()
            request.token = avatar_token(
                key, secret, room=room.name, identity=self._identity, agent_identity=agent_identity,
                name=self._avatar_name,
            )
            self._dispatch_id = await self._dispatch(request, room.name)
        self._dispatch_room = room.name
        agent_session.output.audio = DataStreamAudioOutput(
            room, destination_identity=self._identity, sample_rate=self._sample_rate,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        )

    def _inline_photo(self) -> bytes:
        if self._photo is None:
            return b""
        if len(self._photo) > MAX_INLINE_IMAGE_BYTES:
            raise AvatarLiveKitError(
                f"the photo is {len(self._photo) // 1024} KiB; node mode sends it with the dispatch and takes up to "
                f"{MAX_INLINE_IMAGE_BYTES // 1024} KiB: shrink it, or prepare it on the node "
                "(`avatar prepare PHOTO`) and pass avatar_id="
            )
        return self._photo

    def _credentials(self) -> tuple[str, str, str]:
        url = self._livekit_url or os.environ.get("LIVEKIT_URL", "")
        key = self._api_key or os.environ.get("LIVEKIT_API_KEY", "")
        secret = self._api_secret or os.environ.get("LIVEKIT_API_SECRET", "")
        if not (url and key and secret):
            raise AvatarLiveKitError(
                "node mode needs LiveKit credentials: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
                "(or pass livekit_url=, api_key=, api_secret=)"
            )
        return url, key, secret

    async def _dispatch(self, request: AvatarJobRequest, room_name: str) -> str:
        from livekit import api

        url, key, secret = self._credentials()
        async with api.LiveKitAPI(url, key, secret) as lkapi:
            dispatch = await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=self._worker_name, room=room_name, metadata=request.to_json())
            )
        return str(dispatch.id)

    async def _cancel_dispatch(self) -> None:
        if not self._dispatch_id or self._dispatcher is not None:
            return
        from livekit import api

        try:
            url, key, secret = self._credentials()
            async with api.LiveKitAPI(url, key, secret) as lkapi:
                await lkapi.agent_dispatch.delete_dispatch(self._dispatch_id, self._dispatch_room)
        except Exception as exc:  # the room may be gone already; nothing is left to return
            log.debug("avatar dispatch not deleted: %s", exc)

    async def aclose(self) -> None:
        """Stop the avatar and return everything it holds. Idempotent; finishes even if cancelled."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        try:
            if self._avatar is not None:
                await self._avatar.aclose()
            await self._cancel_dispatch()
        finally:
            if self._mode == "local" and self._room is not None:
                # The base class would remove the avatar participant: here that is the agent itself.
                self._room.off("connection_state_changed", self._on_connection_state_changed)
                self._room = None
            await super().aclose()
