"""The `avatar` command: render speech or text to an MP4, inspect or prepare on a node.

    avatar say "Hello there" --image me.jpg -o hello.mp4
    avatar speak speech.wav --image me.jpg -o speech.mp4 --target 10.0.0.5:50051
    avatar info --target 10.0.0.5:50051
    avatar prepare me.jpg --target 10.0.0.5:50051         # prints an id for --avatar-id
    avatar prepare --video me.mp4 --target 10.0.0.5:50051 # an avatar from a clip of the person
    avatar say "Hi" --avatar-id ID --target 10.0.0.5:50051 --ca ca.pem -o hi.mp4
    avatar obs --setup          # the avatar as a live source in OBS (the [obs] extra)
    avatar cam --image me.jpg --say "Hello everyone"      # virtual camera + microphone
    avatar web                  # talk to the avatar in a browser (the [web] extra)

Without --target an in-process node is started for the command and stopped afterwards.
Mistakes in the command line exit with status 2, failures with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from .audio import read_audio_file
from .cli_kit import (
    CliError,
    UsageError,
    add_connection_arguments,
    channel_credentials,
    missing_extra,
    parse_size,
    photo_or_sample,
    quiet_native_stderr,
    read_photo,
    run_guarded,
    sample_image,
)
from .client import MAX_MESSAGE_BYTES, AsyncAvatarClient, load_image
from .events import NodeInfo, PreparedAvatar
from .render import RenderResult, render_to_mp4

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("avatar-node")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "unknown"

__all__ = ["CliError", "UsageError", "build_parser", "main", "parse_size", "sample_image"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar", description="Render and inspect talking avatars on an avatar node."
    )
    parser.add_argument("--version", action="version", version=f"avatar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    connection = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(connection)
    # `avatar prepare` needs a running node: the id it prints names the photo there.
    remote = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(remote, without_target="none; required")

    render = argparse.ArgumentParser(add_help=False, parents=[connection])
    who = render.add_mutually_exclusive_group()
    who.add_argument("--image", type=Path, help="reference photo (default: the bundled sample portrait)")
    who.add_argument("--avatar-id", default="", metavar="ID",
                     help="a photo already prepared on the --target node (`avatar prepare`)")
    render.add_argument("-o", "--output", type=Path, default=Path("avatar.mp4"), help="MP4 to write")
    render.add_argument("--size", type=parse_size, default=(848, 480), metavar="WxH", help="default 848x480")
    render.add_argument("--fps", type=float, default=0.0, metavar="N",
                        help="frames a second (default: the engine's own rate, 25 for portrait, 16 for livetalk)")
    render.add_argument("--voice", default="", help="text-to-speech voice (see `avatar info`)")
    render.add_argument("--engine", default="", help="engine name (default: the node's default; see `avatar info`)")
    render.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no engine start-up chatter")

    say = commands.add_parser("say", parents=[render], help="render the avatar speaking TEXT")
    say.add_argument("text", metavar="TEXT")
    say.set_defaults(run=run_say)

    speak = commands.add_parser("speak", parents=[render], help="render the avatar saying an audio file")
    speak.add_argument("audio", type=Path, metavar="AUDIO", help="wav, mp3, ogg... (mixed to mono)")
    speak.set_defaults(run=run_speak)

    info = commands.add_parser("info", parents=[connection], help="show a node's engines, voices and load")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_info)

    prepare = commands.add_parser(
        "prepare", parents=[remote],
        help="upload a photo (or, with --video, a clip of the person) to the --target node, print its id "
             "(for --avatar-id)",
    )
    prepare.add_argument("image", type=Path, metavar="IMAGE", nargs="?")
    prepare.add_argument("--video", type=Path, metavar="CLIP",
                         help="a 30-120 s video of the person talking (MP4, MOV or WebM; 3 s at least), not a photo")
    prepare.add_argument("--engine", default="", help="the engine to prepare for (default: the node's default)")
    prepare.set_defaults(run=run_prepare)

    web = commands.add_parser("web", help="talk to the avatar in a browser: a node with its web page, in process")
    web.add_argument("--image", type=Path, help="the avatar's photo (default: the bundled sample portrait)")
    web.add_argument("--port", type=int, default=8080, help="the page's port (default 8080; 0 = any free port)")
    web.add_argument("--host", default="127.0.0.1", help="the page's address (default: loopback only)")
    web.add_argument("--token", default=os.environ.get("AVATAR_TOKEN"),
                     help="require this token on the page and its endpoints (default: $AVATAR_TOKEN)")
    web.add_argument("--engine", default="portrait", help="the engine to run (default: portrait)")
    web.add_argument("--max-sessions", type=int, default=2, help="visitors at once (default 2)")
    web.add_argument("--open", action="store_true", help="open the page in the default browser")
    web.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = Ctrl+C)")
    web.set_defaults(run=run_web)

    # Listed for --help only: main() hands `avatar obs ...` to the OBS integration untouched.
    commands.add_parser("obs", help="the avatar as a live source in OBS, or RTMP out (see `avatar obs --help`)")
    from .virtualcam.command import add_cam_arguments, run_cam

    cam = commands.add_parser(
        "cam", parents=[connection], help="be a virtual camera and microphone for meeting apps"
    )
    add_cam_arguments(cam)
    cam.set_defaults(run=run_cam)
    return parser


def connect(target: str, token: str | None, args: argparse.Namespace) -> AsyncAvatarClient:
    return AsyncAvatarClient(target, token, credentials=channel_credentials(args) if args.target else None)


@contextlib.contextmanager
def node_target(args: argparse.Namespace) -> Iterator[tuple[str, str | None]]:
    """The node to talk to: --target, or a node started here for this command."""
    channel_credentials(args)  # complain about TLS options before any work
    if args.target:
        yield args.target, args.token
        return
    if getattr(args, "avatar_id", ""):
        raise UsageError("--avatar-id names a photo prepared on a running node: add --target HOST:PORT "
                         "(without --target a node is started just for this command, and knows no ids)")
    try:  # the node's heavy parts are only needed when running one in-process
        from avatar_node.server import NodeConfig, start_background_node
    except ImportError as error:
        raise CliError(
            f"no --target given and no in-process node available ({error}); pass --target HOST:PORT"
        ) from None
    engine = getattr(args, "engine", "") or "portrait"
    node = start_background_node(
        NodeConfig(host="127.0.0.1", port=0, engines=[engine], max_sessions=1, auth_token=None)
    )
    try:
        yield node.target, None
    finally:
        node.stop()


class ProgressBar:
    """A tqdm bar over media seconds; it appears once the speech's length is known."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: tqdm | None = None
        self._done = 0.0

    def set_total(self, seconds: float) -> None:
        if self._bar is None:
            self._bar = tqdm(
                total=seconds, desc="rendering", unit="s", bar_format=self.FORMAT,
                disable=not self._enabled, dynamic_ncols=True,
            )
            self._bar.update(self._done)
        else:
            self._bar.total = seconds
            self._bar.refresh()

    def advance_to(self, seconds: float) -> None:
        step, self._done = seconds - self._done, seconds
        if self._bar is not None:
            if seconds > self._bar.total:  # the turn ran over its estimate (look-ahead, rounding)
                self._bar.total = seconds
            self._bar.update(step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def check_output(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: the folder {folder} does not exist (create it, or choose "
                         "another -o)")
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder; give a file name such as {path / 'avatar.mp4'}")


def render(args: argparse.Namespace, **what: object) -> int:
    check_output(args.output)
    image = None if args.avatar_id else photo_or_sample(args.image)
    width, height = args.size
    bar = ProgressBar(enabled=not args.quiet)
    quiet = quiet_native_stderr() if args.quiet else contextlib.nullcontext()
    try:
        with quiet, node_target(args) as (target, token):

            async def go() -> RenderResult:
                async with connect(target, token, args) as client:
                    return await render_to_mp4(
                        client,
                        args.output,
                        image=image,
                        avatar_id=args.avatar_id,
                        engine=args.engine,
                        width=width,
                        height=height,
                        fps=args.fps,
                        voice=args.voice,
                        progress=bar,
                        **what,  # type: ignore[arg-type]
                    )

            result = asyncio.run(go())
    finally:
        bar.close()
    if result.speech_s <= 0:
        result.path.unlink(missing_ok=True)
        raise CliError("the node made no speech of TEXT (nothing it can pronounce?): give it words to say")
    print(
        f"wrote {result.path}: {result.width}x{result.height} at {result.fps:g} fps, "
        f"{result.duration_s:.2f} s ({result.frames} frames) for {result.speech_s:.2f} s of speech, "
        f"in {result.wall_s:.1f} s "
        f"({result.realtime_factor:.1f}x real time)"
    )
    return 0


def run_say(args: argparse.Namespace) -> int:
    if not any(ch.isalnum() for ch in args.text):
        raise UsageError(f"nothing to say: TEXT {args.text!r} has no words")
    return render(args, text=args.text)  # long text is spoken as several turns (render_to_mp4)


def run_speak(args: argparse.Namespace) -> int:
    samples, rate = read_audio_file(args.audio)
    if samples.size == 0:
        raise CliError(f"{args.audio} holds no audio")
    return render(args, speech=(samples, rate))


def format_info(info: NodeInfo) -> str:
    lines = [
        f"version:   {info.version}",
        f"sessions:  {info.active_sessions}/{info.max_sessions} active"
        + ("  (draining)" if info.draining else ""),
        f"load:      {info.load:.0%} of the node's compute used by live sessions",
        f"auth:      {'token required' if info.auth_required else 'none'}",
        f"messages:  up to {info.max_message_bytes} bytes, images up to {info.max_image_pixels} pixels",
        "engines:",
    ]
    for engine in info.engines:
        default = " (default)" if engine.is_default else ""
        lines.append(
            f"  {engine.name}{default}: {engine.native_fps:g} fps, {engine.frames_per_step} frame(s)/step, "
            f"{engine.audio_lookahead_ms} ms look-ahead. {engine.description}".rstrip()
        )
    lines.append(f"voices:    {', '.join(info.voices) or '(none)'}")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    with node_target(args) as (target, token):

        async def go() -> NodeInfo:
            async with connect(target, token, args) as client:
                return await client.node_info()

        info = asyncio.run(go())
    print(json.dumps(dataclasses.asdict(info), indent=2) if args.json else format_info(info))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    if not args.target:
        raise UsageError("avatar prepare needs --target HOST:PORT: the id it prints names the photo on that "
                         "node, for later --avatar-id (a node started just for this command would forget it)")
    if (args.image is None) == (args.video is None):
        raise UsageError("avatar prepare takes a photo (IMAGE) or a clip (--video CLIP), one of them")
    image = load_image(args.video) if args.video else read_photo(args.image)
    if args.video and len(image) > MAX_MESSAGE_BYTES:  # (a photo is checked by read_photo)
        raise UsageError(f"{args.video} is {len(image) / 2**20:.1f} MB; a node takes at most "
                         f"{MAX_MESSAGE_BYTES // 2**20} MB: re-encode it, e.g. `ffmpeg -i {args.video} "
                         "-vf scale=-2:480 -crf 26 -an clip.mp4`, or cut it to 30-120 s")
    with node_target(args) as (target, token):

        async def go() -> PreparedAvatar:
            async with connect(target, token, args) as client:
                return await client.prepare_avatar(image, engine=args.engine)

        prepared = asyncio.run(go())
    face = prepared.face
    where = f", face at {face.x:.0f},{face.y:.0f} {face.width:.0f}x{face.height:.0f}" if face else ""
    print(prepared.avatar_id)
    print(
        f"{prepared.image_width}x{prepared.image_height}, {prepared.faces_found} face(s){where}",
        file=sys.stderr,
    )
    for note in prepared.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def run_web(args: argparse.Namespace) -> int:
    """A node in this process serving the web page (gRPC on a free loopback port beside it)."""
    import threading
    import webbrowser

    try:
        from avatar_node.server import NodeConfig, start_background_node
        from avatar_node.web import web_extra_missing
    except ImportError as error:
        raise CliError(f"`avatar web` runs a node in this process and needs it installed ({error})") from None
    missing = web_extra_missing()
    if missing is not None:
        raise CliError(missing)
    photo = load_image(args.image) if args.image else None
    try:
        node = start_background_node(NodeConfig(
            host="127.0.0.1", port=0, engines=[args.engine], max_sessions=args.max_sessions,
            auth_token=args.token or None, web_port=args.port, web_host=args.host, web_default_photo=photo,
        ))
    except OSError as error:  # the page's port is taken or not ours to use: a command-line matter
        raise UsageError(str(error)) from None
    try:
        url = node.web_url or ""
        print(f"avatar page on {url}  (gRPC on {node.target}; Ctrl+C to stop)", flush=True)
        if args.token:
            print(f"sign in with the token, or open {url}#token={args.token}", flush=True)
        if args.open and not webbrowser.open(url + (f"#token={args.token}" if args.token else "")):
            print(f"no web browser could be opened here: open {url} yourself", flush=True)
        threading.Event().wait(args.duration if args.duration > 0 else None)
    finally:
        node.stop()
    return 0


def run_obs(argv: Sequence[str]) -> int:
    """`avatar obs` lives in the optional OBS integration: imported by name, only when asked for,
    so that the client never depends on an integration."""
    try:
        obs_cli = importlib.import_module("avatar_obs.cli")
    except ImportError as error:
        line = missing_extra("avatar obs", "obs", "OBS", error)
        if {"-h", "--help"} & set(argv):
            print("usage: avatar obs [options]: the avatar as a live source in OBS, or RTMP out\n" + line)
            return 0
        print(f"error: {line}", file=sys.stderr)
        return 1
    return int(obs_cli.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["obs"]:
        return run_obs(argv[1:])
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: int(args.run(args)))


if __name__ == "__main__":
    sys.exit(main())
