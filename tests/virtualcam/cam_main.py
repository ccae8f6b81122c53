"""`avatar` with the recording camera backend registered: run as `python cam_main.py cam --backend recording ...`."""

import faulthandler
import signal
import sys
from pathlib import Path

import pyvirtualcam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recording_backend import RecordingCamera  # noqa: E402

pyvirtualcam.register_backend("recording", RecordingCamera)
faulthandler.register(signal.SIGUSR1)  # a test that finds the command hung asks for its stacks

from avatar_client.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
