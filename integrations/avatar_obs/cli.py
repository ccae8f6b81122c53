"""`avatar obs`: the avatar as a live source for OBS (MPEG-TS over UDP), or straight to RTMP.

avatar obs --setup                              # local node, sample photo, OBS on localhost:4455
avatar obs --setup --image me.jpg --mic         # the host's microphone drives the avatar
avatar obs --target 10.0.0.5:50051 --avatar-id ID --control-port 9555
avatar obs --rtmp rtmp://127.0.0.1/live/avatar --setup
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from avatar_client import SessionSpec
from avatar_client.cli_kit import (
    UsageError,
    add_connection_arguments,
    channel_credentials,
    parse_size,
    read_photo,
    run_guarded,
    sample_image,
)
from avatar_client.voice_gate import DEFAULT_THRESHOLD_DBFS, THRESHOLD_FLAG, VoiceGate

from .app import AppConfig, AvatarObs
from .control import ControlError
from .drivers import parse_audio_input
from .errors import SettingsError, SetupError
from .obs_source import PLACEMENTS, SourceSpec, obs_input_url
from .obs_ws import ObsAddress, ObsError
from .publisher import rtmp_destination, udp_destination

DEFAULT_UDP = "127.0.0.1:9555"
BEHAVIOURS = ("nod", "smile", "blink", "shake", "raise_eyebrows")




def _udp(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--udp wants [HOST:]PORT, not {text!r}") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"UDP port must be 1-65535, not {number}")
    return (host if sep and host else "127.0.0.1"), number


def _positive(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar obs",
        description="Publish the avatar as a live stream for OBS (MPEG-TS over UDP) or to an RTMP server, "
        "set up its Media Source in OBS, and let a microphone, a chat bot or hotkeys drive it.",
    )
    node = parser.add_argument_group("the avatar")
    add_connection_arguments(node)
    who = node.add_mutually_exclusive_group()
    who.add_argument("--image", type=Path, help="reference photo (default: the bundled sample portrait)")
    who.add_argument("--avatar-id", default="", help="a photo prepared on the node (`avatar prepare`)")
    node.add_argument("--engine", default="", help="engine name (default: the node's default)")
    node.add_argument("--voice", default="", help="text-to-speech voice for --say and chat")
    node.add_argument("--size", type=parse_size, default=(848, 480), metavar="WxH", help="default 848x480")
    node.add_argument(
        "--fps", type=float, default=0.0, metavar="N",
        help="frames a second (default: the engine's own rate, 25 for portrait, 16 for livetalk)",
    )

    out = parser.add_argument_group("where the stream goes")
    where = out.add_mutually_exclusive_group()
    where.add_argument(
        "--udp", type=_udp, metavar="[HOST:]PORT", help=f"MPEG-TS over UDP (default {DEFAULT_UDP})"
    )
    where.add_argument(
        "--rtmp", metavar="URL", help="publish to an RTMP server instead, e.g. rtmp://127.0.0.1/live/avatar"
    )

    obs = parser.add_argument_group("OBS (obs-websocket 5)")
    obs.add_argument(
        "--setup",
        action="store_true",
        help="create or update the avatar's Media Source in OBS, "
        "then keep watching it and repair a dead feed",
    )
    obs.add_argument("--setup-only", action="store_true", help="set the source up and exit (no streaming)")
    obs.add_argument("--obs-host", help="default $OBS_WEBSOCKET_HOST or localhost")
    obs.add_argument("--obs-port", type=int, help="default $OBS_WEBSOCKET_PORT or 4455")
    obs.add_argument("--obs-password", help="default $OBS_WEBSOCKET_PASSWORD")
    obs.add_argument("--scene", default="", help="the scene to add the source to (default: the one on air)")
    obs.add_argument("--source-name", default="Avatar", help="the Media Source's name (default: Avatar)")
    obs.add_argument(
        "--placement",
        choices=PLACEMENTS,
        help="where the avatar goes on the canvas (new source: fit; "
        "an existing source keeps its layout unless this is given)",
    )
    obs.add_argument(
        "--scale", type=float, default=0.45, help="corner placements: share of the canvas height"
    )
    obs.add_argument("--no-monitor", action="store_true", help="do not monitor the avatar's audio in OBS")
    obs.add_argument(
        "--buttons",
        default="interrupt," + ",".join(BEHAVIOURS[:2]),
        help="actions offered as hotkey-able hidden scene items (comma-separated; '' for none; "
        "default: interrupt,nod,smile)",
    )
    obs.add_argument(
        "--obs-input", metavar="URL", help="what OBS opens, if not the stream itself (e.g. through a relay)"
    )
    obs.add_argument(
        "--repair",
        choices=("both", "watchdog", "reconnect", "off"),
        default="both",
        help="how the command keeps OBS's feed alive: a screenshot watchdog, re-opening after the "
        "RTMP server returns, both (default) or neither",
    )
    obs.add_argument(
        "--watchdog-interval",
        type=_positive,
        default=2.0,
        metavar="SECONDS",
        help="seconds between health checks (default 2; a dead feed is repaired after ~3 checks)",
    )

    drive = parser.add_argument_group("what makes the avatar speak")
    drive.add_argument(
        "--mic",
        nargs="?",
        const="",
        default=None,
        metavar="DEVICE_OR_FILE",
        help="the host's microphone drives the avatar; optionally FORMAT:DEVICE (alsa:hw:1, "
        "avfoundation::1, 'dshow:audio=Mic') or an audio file played as a microphone",
    )
    drive.add_argument(
        THRESHOLD_FLAG,
        dest="voice_threshold_db",
        type=float,
        default=DEFAULT_THRESHOLD_DBFS,
        metavar="DBFS",
        help=f"with --mic: the level at which a voice opens a turn (default {DEFAULT_THRESHOLD_DBFS:g} dBFS)",
    )
    drive.add_argument(  # the flag's earlier name
        "--mic-threshold", dest="voice_threshold_db", type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    drive.add_argument(
        "--say", action="append", default=[], metavar="TEXT", help="say TEXT once the avatar is live"
    )
    drive.add_argument(
        "--speak",
        action="append",
        default=[],
        type=Path,
        metavar="AUDIO",
        help="say an audio file once the avatar is live",
    )
    drive.add_argument(
        "--control-port",
        type=int,
        metavar="PORT",
        help="serve a local HTTP control (say/speak/interrupt/behaviour/status) for chat bots",
    )
    drive.add_argument(
        "--control-host", default="127.0.0.1", help="address for --control-port (default 127.0.0.1)"
    )

    parser.add_argument(
        "--duration", type=_positive, metavar="SECONDS", help="stop after SECONDS (default: run until Ctrl+C)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail")
    return parser


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """The command's settings; UsageError (exit status 2) says what in the command line cannot work."""
    try:
        return _config(args)
    except (SetupError, ValueError) as error:
        raise UsageError(str(error)) from None


def _config(args: argparse.Namespace) -> AppConfig:
    width, height = args.size
    if args.fps < 0 or args.fps > 60:
        raise SetupError("--fps must be at most 60 (or 0 for the engine's own rate)")
    image = read_photo(args.image) if args.image else (None if args.avatar_id else sample_image())
    spec = SessionSpec(
        photo=None if args.avatar_id else image,
        avatar_id=args.avatar_id,
        engine=args.engine,
        voice=args.voice,
        width=width,
        height=height,
        fps=args.fps,
        video="h264",
    )
    if args.rtmp:
        destination = rtmp_destination(args.rtmp)
    else:
        host, port = args.udp or _udp(DEFAULT_UDP)
        destination = udp_destination(host, port)
    buttons = tuple(b.strip() for b in args.buttons.split(",") if b.strip())
    for button in buttons:
        if button != "interrupt" and button not in BEHAVIOURS:
            raise SetupError(f"unknown button {button!r}: use interrupt or one of {', '.join(BEHAVIOURS)}")
    obs = source = None
    if args.setup or args.setup_only:
        obs = ObsAddress.from_environment(args.obs_host, args.obs_port, args.obs_password)
        if args.obs_input:
            input_url, input_format = args.obs_input, "mpegts" if args.obs_input.startswith("udp:") else ""
        else:
            input_url, input_format = obs_input_url(destination.url)
        source = SourceSpec(
            name=args.source_name,
            input_url=input_url,
            input_format=input_format,
            scene=args.scene,
            placement=args.placement,
            scale=args.scale,
            monitor=not args.no_monitor,
            buttons=buttons,
        )
    for path in args.speak:
        if not path.is_file():
            raise SetupError(f"no such audio file: {path}")
    return AppConfig(
        spec=spec,
        destination=destination,
        target=args.target,
        token=args.token,
        credentials=channel_credentials(args),
        obs=obs,
        source=source,
        setup_only=args.setup_only,
        repair=args.repair,
        watchdog_interval_s=args.watchdog_interval,
        mic=parse_audio_input(args.mic) if args.mic is not None else None,
        gate=VoiceGate(threshold_dbfs=args.voice_threshold_db),
        say=[text for text in args.say if text.strip()],
        speak=list(args.speak),
        control_host=args.control_host,
        control_port=args.control_port,
        duration_s=args.duration,
    )


async def _run(app: AvatarObs) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, app.stop)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C raises KeyboardInterrupt instead
            pass
    await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="avatar obs: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        for noisy in ("asyncio", "grpc", "libav"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    def work() -> int:
        try:
            asyncio.run(_run(AvatarObs(config_from_args(args))))
        except SettingsError as error:
            raise UsageError(str(error)) from None
        return 0

    return run_guarded(work, failures=(SetupError, ObsError, ControlError))


if __name__ == "__main__":
    sys.exit(main())
