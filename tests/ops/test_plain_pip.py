"""The README's first command, as a new user runs it: plain pip into a fresh virtualenv, then a talking MP4."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_try_it_command() -> str:
    section = (ROOT / "README.md").read_text().split("## Try it", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    return command


def copy_checkout(dest: Path) -> None:
    """The files a fresh clone has (tracked, or new and not ignored): no built models, no venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.mark.slow
def test_readme_command_with_plain_pip_writes_a_talking_mp4(tmp_path: Path):
    command = readme_try_it_command()
    assert "pip install ." in command and "install.sh" not in command and "--no-deps" not in command
    checkout = tmp_path / "avatar-node"
    copy_checkout(checkout)
    assert not list(checkout.rglob("*.tflite"))  # the models come from the build, as in a clone
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "AVATAR_FACE_MODEL_DIR")}
    result = subprocess.run(["bash", "-c", f"set -e; {command} -q; avatar --version; avatar-node --version"],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert re.search(r"^avatar \d", result.stdout, flags=re.M) and re.search(r"^avatar-node \d", result.stdout,
                                                                              flags=re.M)
    installed = list((checkout / ".venv").rglob("site-packages/avatar_node/engines/portrait/face_models/*"))
    assert {p.name for p in installed} >= {"NOTICE", "LICENSE-Apache-2.0.txt", "face_landmark.tflite"}
    assert not list((checkout / ".venv").rglob("site-packages/tensorflow"))

    with av.open(str(checkout / "hello.mp4")) as mp4:
        video = [f.to_ndarray(format="gray").astype(np.float32) for f in mp4.decode(video=0)]
    with av.open(str(checkout / "hello.mp4")) as mp4:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in mp4.decode(audio=0)])
    assert video[0].shape == (480, 848) and len(video) > 25
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01  # speech, not silence
    changes = [np.abs(b - a).mean() for a, b in zip(video, video[1:])]
    assert max(changes) > 0.5  # the face moves
