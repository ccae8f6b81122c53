"""`avatar-livekit`: the node-mode avatar worker, and a room bot.

    avatar-livekit worker --node 127.0.0.1:50051
    avatar-livekit bot --room demo --image me.jpg --follow alice

Both read LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from avatar_client.cli_kit import (
    TOKEN_ENV,
    UsageError,
    add_connection_arguments,
    channel_credentials,
    missing_extra,
    parse_size,
    parse_target,
    run_guarded,
)
from avatar_client.voice_gate import DEFAULT_THRESHOLD_DBFS, THRESHOLD_FLAG, VoiceGate

from .errors import AvatarLiveKitError, check_video_format
from .job import DEFAULT_WORKER_NAME

#: Read as well, for set-ups written before the names were shared with `avatar`.
OLD_TOKEN_ENV = "AVATAR_NODE_TOKEN"


def _old_names(parser: argparse.ArgumentParser) -> None:
    """--node and --node-token, the earlier names of --target and --token, kept working unlisted."""
    parser.add_argument("--node", dest="target", type=parse_target, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--node-token", dest="token", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.set_defaults(token=os.environ.get(TOKEN_ENV) or os.environ.get(OLD_TOKEN_ENV) or None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-livekit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="serve AvatarSession(mode='node'): one avatar per dispatched room")
    add_connection_arguments(worker, without_target="$AVATAR_NODE; one is required")
    _old_names(worker)
    worker.set_defaults(target=os.environ.get("AVATAR_NODE") or None)
    worker.add_argument("--agent-name", default=DEFAULT_WORKER_NAME,
                        help=f"the agent name to register for dispatch (default {DEFAULT_WORKER_NAME})")
    worker.add_argument("--image", type=Path, help="the photo for agents that send none")
    worker.add_argument("--agent-gone", type=float, default=60.0, metavar="S",
                        help="leave a room once its agent has been gone this long (default 60 s)")
    worker.add_argument("--http-port", type=int, default=0, help="health/load endpoint port (default: any free)")

    bot = commands.add_parser("bot", help="join a room and give a participant's voice a face")
    bot.add_argument("--room", required=True, help="the room to join")
    bot.add_argument("--image", type=Path, required=True, help="the avatar's photo")
    bot.add_argument("--follow", required=True, metavar="IDENTITY", help="whose microphone drives the avatar")
    bot.add_argument("--identity", default="", help="the bot's identity (default avatar-IDENTITY)")
    add_connection_arguments(bot, without_target="render in this process")
    _old_names(bot)
    bot.add_argument("--engine", default="", help="engine to render with (default: portrait in process)")
    bot.add_argument("--size", type=parse_size, metavar="WxH", help="default 848x480")
    bot.add_argument("--width", type=int, help=argparse.SUPPRESS)  # earlier names of --size
    bot.add_argument("--height", type=int, help=argparse.SUPPRESS)
    bot.add_argument("--fps", type=float, default=0.0, metavar="N",
                     help="frames a second (default: the engine's own rate, 25 for portrait, 16 for livetalk)")
    bot.add_argument("--publish-audio", action="store_true",
                     help="publish the voice too, in sync with the face (mute the original)")
    bot.add_argument(THRESHOLD_FLAG, dest="voice_threshold_db", type=float, default=DEFAULT_THRESHOLD_DBFS,
                     metavar="DBFS", help="the level at which the followed voice opens a turn "
                     f"(default {DEFAULT_THRESHOLD_DBFS:g} dBFS)")
    return parser


def _livekit_env() -> tuple[str, str, str]:
    names = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    values = [os.environ.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values) if not value]
    if missing:
        raise AvatarLiveKitError(f"set {', '.join(missing)} to the LiveKit server to join")
    return values[0], values[1], values[2]


def _read(path: Path | None) -> bytes:
    if path is None:
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AvatarLiveKitError(f"cannot read {path}: {exc.strerror or exc}") from None


def run_worker(args: argparse.Namespace) -> int:
    from .server import WorkerConfig, serve

    config = WorkerConfig.from_env(
        args.target or "", node_token=args.token or "", node_credentials=channel_credentials(args),
        agent_name=args.agent_name, default_image=_read(args.image),
        agent_gone_s=args.agent_gone, http_port=args.http_port,
    )
    serve(config)
    return 0


def run_bot(args: argparse.Namespace) -> int:
    if args.size is not None and (args.width or args.height):
        raise UsageError("give --size WxH, not --size with --width/--height")
    args.width, args.height = args.size or (args.width or 848, args.height or 480)
    check_video_format(args.width, args.height, args.fps)
    url, key, secret = _livekit_env()
    photo = _read(args.image)
    identity = args.identity or f"avatar-{args.follow}"
    return asyncio.run(_bot(args, url, key, secret, photo, identity))


async def _bot(args: argparse.Namespace, url: str, key: str, secret: str, photo: bytes, identity: str) -> int:
    from avatar_client import SessionSpec
    from livekit import api

    from .bot import RoomBot
    from .bot import run_bot as run
    from .feed_renderer import FeedRenderer
    from .room_session import RoomSession

    spec = SessionSpec(photo=photo, engine=args.engine, width=args.width, height=args.height, fps=args.fps)
    if args.target:
        renderer = await FeedRenderer.open_node(args.target, args.token, channel_credentials(args), spec)
    else:
        renderer = await FeedRenderer.open_runtime(spec)

    def token() -> str:
        grants = api.VideoGrants(room_join=True, room=args.room, can_publish=True, can_subscribe=True,
                                 can_publish_sources=["camera", "microphone"], can_publish_data=False)
        return (api.AccessToken(key, secret).with_identity(identity).with_name(f"{args.follow} (avatar)")
                .with_grants(grants).to_jwt())

    bot = RoomBot(renderer, args.follow, publish_audio=args.publish_audio, gate=VoiceGate(args.voice_threshold_db))
    session = RoomSession(url, token, on_joined=bot.joined)
    task = asyncio.ensure_future(run(session, bot))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        reason = await task
    except asyncio.CancelledError:
        reason = "stopped"
    logging.getLogger(__name__).info("bot done: %s", reason)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import livekit.agents  # noqa: F401 - only to say which extra is missing, before any work
    except ImportError as error:
        print(f"error: {missing_extra('avatar-livekit', 'livekit', 'LiveKit', error)}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def work() -> int:
        try:
            return run_worker(args) if args.command == "worker" else run_bot(args)
        except AvatarLiveKitError as exc:  # what was asked cannot work (settings, photo, format)
            raise UsageError(str(exc)) from None

    return run_guarded(work)


if __name__ == "__main__":
    sys.exit(main())
