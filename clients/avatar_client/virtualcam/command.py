"""The `avatar cam` command line: arguments, checks, and the hand-over to VirtualCam."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_kit import CliError, channel_credentials, parse_size, photo_or_sample
from ..voice_gate import DEFAULT_THRESHOLD_DBFS, THRESHOLD_FLAG


def add_cam_arguments(cam: argparse.ArgumentParser) -> None:
    who = cam.add_argument_group("avatar")
    who.add_argument("--image", type=Path, help="reference photo (default: the bundled sample portrait)")
    who.add_argument("--avatar-id", default="", help="a photo prepared on the node (`avatar prepare`)")
    who.add_argument("--engine", default="", help="engine name (default: the node's default)")
    who.add_argument("--voice", default="", help="text-to-speech voice for --say and agents")

    camera = cam.add_argument_group("camera")
    camera.add_argument("--size", type=parse_size, default=(848, 480), metavar="WxH", help="default 848x480")
    camera.add_argument(
        "--fps", type=float, default=25.0,
        help="frames a second to the camera (default 25); the avatar renders at its engine's own rate "
             "(16 for livetalk) and each frame is shown until the next is due",
    )
    camera.add_argument("--device", help="camera device: /dev/videoN on Linux (default: the first free one)")
    camera.add_argument(
        "--backend", help="pyvirtualcam backend: v4l2loopback (Linux), obs, unitycapture (Windows)"
    )
    camera.add_argument("--no-camera", action="store_true", help="only the virtual microphone")

    mic = cam.add_argument_group("microphone")
    mic.add_argument("--no-mic", action="store_true", help="only the virtual camera")
    mic.add_argument(
        "--name", default="avatar",
        help="names the virtual microphone and the control endpoint (default: avatar)",
    )
    mic.add_argument(
        "--audio-device", metavar="NAME",
        help="play speech on this output device instead of a PulseAudio/PipeWire virtual "
        "microphone (Windows: 'CABLE Input', macOS: 'BlackHole 2ch')",
    )
    mic.add_argument(
        "--av-offset-ms", type=float, default=0.0, metavar="MS",
        help="make the speech this much later (+) or earlier (-) than the picture, to correct a "
        "meeting app's own delay; the status line shows the offset measured at the devices",
    )
    mic.add_argument("--buffer-ms", type=int, default=80, help="speech gathered before playing (jitter; default 80)")
    mic.add_argument("--mic-buffer-ms", type=int, default=80, help="sound server buffer (default 80)")

    drive = cam.add_argument_group("what the avatar says")
    drive.add_argument("--say", metavar="TEXT", help="say TEXT once connected")
    drive.add_argument("--speak", type=Path, metavar="AUDIO", help="say an audio file once connected")
    drive.add_argument("--exit-when-done", action="store_true", help="exit after --say/--speak has been heard")
    drive.add_argument(
        "--puppet", action="store_true",
        help="your microphone drives the avatar; your voice reaches the virtual mic in sync with its lips",
    )
    drive.add_argument("--puppet-mic", metavar="SOURCE", help="microphone for --puppet (default: the default one)")
    drive.add_argument(
        THRESHOLD_FLAG, dest="voice_threshold_db", type=float, default=DEFAULT_THRESHOLD_DBFS, metavar="DBFS",
        help=f"with --puppet: the level (dBFS) at which your voice opens a turn (default {DEFAULT_THRESHOLD_DBFS:g})",
    )
    drive.add_argument(  # the flag's earlier name
        "--puppet-threshold-db", dest="voice_threshold_db", type=float,
        default=argparse.SUPPRESS, help=argparse.SUPPRESS,
    )
    drive.add_argument(
        "--sync-test", action="store_true",
        help="show a flash with a beep once a second instead of the avatar, to check A/V sync",
    )
    drive.add_argument("--no-control", action="store_true", help="no control endpoint for other programs")

    cam.add_argument("-q", "--quiet", action="store_true", help="no status line")
    cam.add_argument("--stall-timeout", type=float, default=3.0, help="seconds without frames before reconnecting")


def run_cam(args: argparse.Namespace) -> int:
    # Imported here so that other `avatar` commands never load the camera and sound modules.
    from ..audio import read_audio_file
    from .errors import CamError
    from .runner import CamOptions, VirtualCam

    if args.no_camera and args.no_mic:
        raise CliError("--no-camera and --no-mic together leave nothing to do")
    if args.say is not None and args.speak is not None:
        raise CliError("pass --say or --speak, not both")
    if args.say is not None and not args.say.strip():
        raise CliError("nothing to say: --say TEXT is empty")
    if args.exit_when_done and args.say is None and args.speak is None:
        raise CliError("--exit-when-done needs --say or --speak")
    if args.sync_test and (args.say is not None or args.speak is not None or args.puppet):
        raise CliError("--sync-test shows a test pattern; it does not take --say, --speak or --puppet")
    if args.image and args.avatar_id:
        raise CliError("pass --image or --avatar-id, not both")
    if args.fps <= 0 or args.fps > 120:
        raise CliError("--fps must be above 0 and at most 120")
    image = None
    if not args.sync_test and not args.avatar_id:
        image = photo_or_sample(args.image)
    speak = None
    if args.speak is not None:
        speak = read_audio_file(args.speak)
        if speak[0].size == 0:
            raise CliError(f"{args.speak} holds no audio")
    width, height = args.size
    options = CamOptions(
        target=args.target, token=args.token, credentials=channel_credentials(args), image=image,
        avatar_id=args.avatar_id,
        engine=args.engine, voice=args.voice, width=width, height=height, fps=args.fps,
        camera=not args.no_camera, device=args.device, backend=args.backend,
        mic=not args.no_mic, name=args.name, audio_device=args.audio_device,
        mic_buffer_ms=args.mic_buffer_ms, prefill_ms=args.buffer_ms, av_offset_ms=args.av_offset_ms,
        puppet=args.puppet, puppet_mic=args.puppet_mic, voice_threshold_db=args.voice_threshold_db,
        say=args.say, speak=speak, exit_when_done=args.exit_when_done, sync_test=args.sync_test,
        control=not args.no_control, status=not args.quiet, stall_s=args.stall_timeout,
    )
    try:
        return VirtualCam(options).run()
    except CamError as error:
        raise CliError(str(error)) from None
