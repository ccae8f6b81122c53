"""What the agent asks of an avatar worker (the dispatch's metadata), and the avatar's access token."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from dataclasses import asdict, dataclass, field

from avatar_client import SessionSpec

from .errors import AvatarLiveKitError

#: The agent name `avatar-livekit worker` registers under by default.
DEFAULT_WORKER_NAME = "avatar-node"

#: The participant attribute that lets the avatar publish on the agent's behalf.
ATTRIBUTE_PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
TOKEN_TTL = datetime.timedelta(hours=6)


@dataclass
class AvatarJobRequest:
    agent_identity: str
    avatar_identity: str
    avatar_name: str = "Avatar"
    avatar_id: str = ""  # a photo prepared on the node
    image: bytes = field(default=b"", repr=False)  # or the photo itself
    engine: str = ""
    width: int = 848
    height: int = 480
    fps: float = 0.0  # 0: the engine's own rate
    sample_rate: int = 48000
    prompt: str = ""
    token: str = field(default="", repr=False)  # minted by the agent; the worker mints one if empty

    def to_json(self) -> str:
        data = asdict(self)
        data["image"] = base64.b64encode(self.image).decode("ascii")
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AvatarJobRequest:
        """Parse a dispatch's metadata; AvatarLiveKitError says what is wrong with it."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            known["image"] = base64.b64decode(known.get("image") or "", validate=True)
            request = cls(**known)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise AvatarLiveKitError(
                f"the dispatch metadata is not an avatar request ({exc}); dispatch this worker through "
                "avatar_livekit.AvatarSession(mode='node')"
            ) from None
        if not request.agent_identity or not request.avatar_identity:
            raise AvatarLiveKitError("the dispatch metadata names no agent_identity / avatar_identity")
        return request

    def session_spec(self, default_image: bytes = b"") -> SessionSpec:
        """The node session this request asks for: its photo (or `default_image`) or its prepared avatar."""
        image = self.image or (b"" if self.avatar_id else default_image)
        if not image and not self.avatar_id:
            raise AvatarLiveKitError(
                "give the avatar a photo (image bytes) or the avatar_id of one prepared on the node"
            )
        return SessionSpec(
            photo=image or None, avatar_id="" if image else self.avatar_id, engine=self.engine, width=self.width,
            height=self.height, fps=self.fps, audio_sample_rate=self.sample_rate, prompt=self.prompt,
        )


def avatar_token(
    api_key: str, api_secret: str, *, room: str, identity: str, agent_identity: str, name: str = "Avatar",
    ttl: datetime.timedelta = TOKEN_TTL,
) -> str:
    """A join token for the avatar participant: kind agent, this room only, allowed to publish a
    camera and a microphone on the agent's behalf and to exchange data (speech in, RPCs both ways);
    it subscribes to no media and cannot change its own metadata."""
    from livekit import api

    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=["camera", "microphone"],
        can_publish_data=True,
        can_subscribe=True,  # data packets and RPCs reach subscribers; media is not subscribed (auto_subscribe off)
        can_update_own_metadata=False,
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_kind("agent")
        .with_identity(identity)
        .with_name(name)
        .with_grants(grants)
        .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent_identity})
        .with_ttl(ttl)
        .to_jwt()
    )
