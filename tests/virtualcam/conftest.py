"""Real peers for the virtual camera tests: a private PulseAudio server, avatar nodes in their
own processes, `avatar cam` runs with the recording camera backend, and readers of what a
meeting app would get from the virtual microphone.

Each peer gets its own runtime directory and ports and is torn down by its fixture. A peer
that is not installed skips the tests that need it, except under CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from ..support.media import speech_clip as speech_clip  # the camera tests import these from here
from ..support.media import write_wav as write_wav
from ..support.node_process import NodeProcess, loopback_node
from ..support.waits import wait_until

HERE = Path(__file__).resolve().parent
CAM_MAIN = HERE / "cam_main.py"
RATE = 48_000
IN_CI = os.environ.get("CI") == "true"


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (Debian package {package})"
        if IN_CI:
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    return path


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:  # type: ignore[type-arg]
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# ---------------------------------------------------------------------------- PulseAudio


@dataclass
class PulseServer:
    runtime_dir: Path
    env: dict[str, str]
    process: subprocess.Popen  # type: ignore[type-arg]

    def pactl(self, *args: str) -> str:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10, check=True
        ).stdout

    def source_names(self) -> list[str]:
        return [line.split("\t")[1] for line in self.pactl("list", "short", "sources").splitlines() if "\t" in line]

    def sink_names(self) -> list[str]:
        return [line.split("\t")[1] for line in self.pactl("list", "short", "sinks").splitlines() if "\t" in line]

    def avatar_modules(self) -> list[str]:
        return [line for line in self.pactl("list", "short", "modules").splitlines() if "avatar" in line]

    def load_virtual_source(self, name: str) -> tuple[str, str]:
        """A null sink + remapped source: play into the sink, and the source is a microphone."""
        self.pactl(
            "load-module", "module-null-sink", f"sink_name={name}_in", f"rate={RATE}", "channels=1", "format=s16le"
        )
        self.pactl(
            "load-module", "module-remap-source", f"master={name}_in.monitor", f"source_name={name}", "channels=1"
        )
        return f"{name}_in", name


def _start_pulseaudio(env: dict[str, str]) -> list[subprocess.Popen]:  # type: ignore[type-arg]
    return [subprocess.Popen(
        [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
            "--log-target=stderr", "--log-level=error",
            "-L", "module-native-protocol-unix", "-L", "module-always-sink",
        ],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]


def _start_pipewire(env: dict[str, str], runtime: Path) -> list[subprocess.Popen]:  # type: ignore[type-arg]
    """PipeWire with its PulseAudio server and session manager, on a private D-Bus."""
    for tool, package in (("pipewire", "pipewire"), ("pipewire-pulse", "pipewire-pulse"),
                          ("wireplumber", "wireplumber"), ("dbus-daemon", "dbus")):
        require(tool, package)
    env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={runtime}/bus"
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [subprocess.Popen(
        ["dbus-daemon", "--session", f"--address={env['DBUS_SESSION_BUS_ADDRESS']}", "--nofork", "--nopidfile"],
        env=env, **quiet,  # type: ignore[call-overload]
    )]
    wait_until(lambda: (runtime / "bus").exists(), 10, "a private D-Bus")
    for command in ("pipewire", "wireplumber", "pipewire-pulse"):
        processes.append(subprocess.Popen([command], env=env, **quiet))  # type: ignore[call-overload]
    return processes


@pytest.fixture(scope="module")
def pulse() -> Iterator[PulseServer]:
    """A sound server of our own, in a private runtime directory (short path: socket names are
    limited to 108 bytes): PulseAudio, or PipeWire with AVATAR_TEST_SOUND_SERVER=pipewire."""
    require("pactl", "pulseaudio-utils")
    require("parec", "pulseaudio-utils")
    kind = os.environ.get("AVATAR_TEST_SOUND_SERVER", "pulseaudio")
    if kind == "pulseaudio":
        require("pulseaudio", "pulseaudio")
    runtime = Path(tempfile.mkdtemp(prefix="avcam-pa-"))
    runtime.chmod(0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "DBUS_"))}
    env.update(HOME=str(runtime), XDG_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
    processes = _start_pipewire(env, runtime) if kind == "pipewire" else _start_pulseaudio(env)
    server = PulseServer(runtime, env, processes[-1])
    try:

        def answers() -> bool:
            if any(p.poll() is not None for p in processes):
                raise AssertionError(f"the {kind} server exited at start")
            return subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5).returncode == 0

        wait_until(answers, 15, f"the {kind} server to answer")
        # The user's own devices, as on a desktop: speakers and a microphone, both the defaults.
        server.pactl("load-module", "module-null-sink", "sink_name=speakers")
        server.load_virtual_source("desk_mic")
        # PipeWire makes the devices a moment after it loads the modules.
        wait_until(lambda: "speakers" in server.sink_names() and "desk_mic" in server.source_names(), 10,
                   "the user's devices")
        server.pactl("set-default-sink", "speakers")
        server.pactl("set-default-source", "desk_mic")
        if kind == "pulseaudio":  # desktops load it: new devices become the default at once
            server.pactl("load-module", "module-switch-on-connect", "ignore_virtual=no")
        yield server
    finally:
        for process in reversed(processes):
            stop_process(process)
        shutil.rmtree(runtime, ignore_errors=True)


class MicReader:
    """`parec` on a source, each chunk stamped on arrival, so that sample n of the recording is
    known to have been heard at `t0 + n / RATE` (t0 from the earliest-arriving chunk: data can
    arrive late, never early)."""

    def __init__(self, pulse: PulseServer, source: str) -> None:
        self._process = subprocess.Popen(
            ["parec", "-d", source, "--raw", "--format=s16le", f"--rate={RATE}", "--channels=1", "--latency-msec=10"],
            env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self._chunks: list[bytes] = []
        self._offsets: list[float] = []
        self._count = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        while chunk := self._process.stdout.read1(1 << 16):  # type: ignore[attr-defined]
            now = time.monotonic()
            self._chunks.append(chunk)
            self._count += len(chunk) // 2
            self._offsets.append(now - self._count / RATE)

    def stop(self) -> tuple[np.ndarray, float]:
        """(int16 samples, monotonic time of sample 0)."""
        stop_process(self._process, 5)
        self._thread.join(5)
        data = b"".join(self._chunks)
        return np.frombuffer(data[: len(data) // 2 * 2], np.int16), min(self._offsets)

    def close(self) -> None:
        stop_process(self._process, 5)


# ---------------------------------------------------------------------------- nodes


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    running = loopback_node()
    try:
        yield running
    finally:
        running.close()


# ---------------------------------------------------------------------------- avatar cam


@dataclass
class CamRun:
    """`avatar cam` in a subprocess with the recording camera backend."""

    process: subprocess.Popen  # type: ignore[type-arg]
    camera_log: Path
    frames_path: Path | None
    keyboard: int | None = None  # the pseudo-terminal's controller end, when there is one
    lines: list[tuple[float, str]] = field(default_factory=list)

    def press(self, key: str) -> None:
        assert self.keyboard is not None, "start the command with terminal=True"
        os.write(self.keyboard, key.encode())

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> float:
        """Wait for an output line containing `text`; returns when it was printed."""

        def seen() -> float | None:
            for when, line in self.lines:
                if text in line:
                    return when
            if self.process.poll() is not None:
                raise AssertionError(f"avatar cam exited ({self.process.returncode}) before {text!r}:\n{self.output()}")
            return None

        return wait_until(seen, timeout, f"{text!r} from avatar cam")

    def statuses(self) -> list[dict[str, str]]:
        """Status lines as {name: value}, e.g. {"A/V": "+2 ms", "node latency": "380 ms"}."""
        names = ("camera", "mic", "A/V", "node latency", "reconnects", "late speech", "dropped")
        out = []
        for _, line in self.lines:
            if line.startswith("status: "):
                fields = {}
                for part in line[len("status: "):].split(" | "):
                    name = next((n for n in names if part.startswith(n + " ")), "state")
                    fields[name] = part[len(name) + 1 :] if name != "state" else part
                out.append(fields)
        return out

    def reported_gaps(self) -> int:
        """Gaps the command said it had to fill or cut (its speech-timing summary at exit)."""
        gaps = 0
        for _, line in self.lines:
            found = re.match(r"speech timing: (\d+) gap.*?, (\d+) time\(s\) the sound device ran dry", line)
            if found:
                gaps += int(found.group(1)) + int(found.group(2))
            if cut := re.match(r"speech cut: (\d+) time\(s\)", line):
                gaps += int(cut.group(1))
        return gaps

    def reported_latencies_ms(self) -> list[float]:
        return [float(s["node latency"].split()[0]) for s in self.statuses() if s["node latency"] != "--"]

    def reported_offsets_ms(self, since: int = 0) -> list[float]:
        """The A/V offsets the status lines reported, from the `since`-th status line on."""
        values = [s.get("A/V", "--").split()[0] for s in self.statuses()[since:]]
        return [float(v) for v in values if v != "--"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # where it hangs, for the failure message
            time.sleep(1.0)
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"avatar cam ignored {signal.Signals(sig).name}:\n{self.output()}") from None

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"avatar cam did not finish:\n{self.output()}")


@pytest.fixture
def start_cam(tmp_path: Path):  # type: ignore[no-untyped-def]
    runs: list[CamRun] = []

    def start(
        *args: str,
        pulse: PulseServer | None = None,
        camera_format: str = "I420",
        keep_frames: bool = False,
        extra_env: dict[str, str] | None = None,
        terminal: bool = False,
    ) -> CamRun:
        index = len(runs)
        log = tmp_path / f"camera-{index}.log"
        frames = tmp_path / f"camera-{index}.raw" if keep_frames else None
        env = dict(pulse.env) if pulse is not None else {**os.environ, "PYTHONUNBUFFERED": "1"}
        if pulse is None:  # no sound server reachable: keep the control file in our own directory
            env["XDG_RUNTIME_DIR"] = str(tmp_path)
        env.update(AVATAR_TEST_CAMERA_LOG=str(log), AVATAR_TEST_CAMERA_FORMAT=camera_format)
        if frames is not None:
            env["AVATAR_TEST_CAMERA_FRAMES"] = str(frames)
        env.update(extra_env or {})
        stdin: int = subprocess.DEVNULL
        keyboard = None
        if terminal:  # a pseudo-terminal as stdin, so the command reads single keys
            keyboard, stdin = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, str(CAM_MAIN), "cam", "--backend", "recording", *args],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        if keyboard is not None:
            os.close(stdin)
        run = CamRun(process, log, frames, keyboard=keyboard)
        threading.Thread(target=run._read, daemon=True).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(5)
        if run.keyboard is not None:
            os.close(run.keyboard)


def resample(samples: np.ndarray, rate: int, to: int = RATE) -> np.ndarray:
    """Resample int16 mono with PyAV (the same library family the node uses)."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=to)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16)


def locate(reference: np.ndarray, recording: np.ndarray) -> tuple[int, float]:
    """Where `reference` best matches inside `recording`: (sample offset, normalised
    cross-correlation there, 1.0 for an exact copy at any level)."""
    ref = reference.astype(np.float64)
    rec = recording.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(ref) + len(rec))))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(rec) - len(ref) + 1]
    energy = np.concatenate([[0.0], np.cumsum(rec**2)])
    window_norms = np.sqrt(np.maximum(energy[len(ref) :] - energy[: len(rec) - len(ref) + 1], 0.0))
    normalised = corr / (np.linalg.norm(ref) * window_norms + 1e-9 * (1 + np.linalg.norm(ref)))
    # Ignore near-silent windows, where the ratio means nothing.
    normalised[window_norms < 1e-3 * np.linalg.norm(ref)] = 0.0
    lag = int(np.argmax(normalised))
    return lag, float(normalised[lag])


def assert_heard_as_spoken(
    spoken: np.ndarray, heard: np.ndarray, cam: CamRun, recorder_glitches: int = 0
) -> int:
    """The recording holds the spoken audio, unaltered and at its level. A dropout is only
    tolerated where the command itself reported a gap (a source that ran late: on a loaded
    machine a node can miss its frame times); then most of the speech must still be intact.
    `recorder_glitches` allows that many short insertions made by the recorder itself (a
    browser's capture inserts or loses a buffer now and then on a loaded machine); the sound
    server's own record stream allows none.
    Returns the sample position where the speech starts in `heard`."""
    from .analysis import match_segments

    fraction, offsets, anchor = match_segments(spoken, heard)
    if os.environ.get("AVATAR_TEST_KEEP_AUDIO"):
        np.save(os.environ["AVATAR_TEST_KEEP_AUDIO"] + "-spoken.npy", spoken)
        np.save(os.environ["AVATAR_TEST_KEEP_AUDIO"] + "-heard.npy", heard)
    heard_part = heard[anchor : anchor + len(spoken)]
    gaps = cam.reported_gaps()
    print(f"heard as spoken: {fraction:.0%} of voiced 200 ms segments intact, offsets drift "
          f"{np.ptp(offsets) if len(offsets) else 0} samples, level {rms_db(heard_part):.2f} dB vs "
          f"{rms_db(spoken):.2f} dB, gaps the command reported: {gaps}")
    if gaps == 0:
        steps = np.diff(offsets) if len(offsets) else np.zeros(0)
        glitches = int(np.count_nonzero(steps))
        if glitches:
            print(f"the recorder inserted {glitches} stretch(es): {steps[steps != 0].tolist()} samples")
        assert len(offsets) and glitches <= recorder_glitches, (fraction, offsets)
        spoiled = round(len(offsets) / fraction) - len(offsets)
        assert spoiled <= glitches, (fraction, offsets)  # a glitch spoils only the segment it falls in
        assert np.all(np.abs(steps) <= 0.05 * RATE), offsets  # and is short
        assert abs(rms_db(heard_part) - rms_db(spoken)) < 1.0
    else:
        assert fraction >= 0.85, (fraction, gaps)
    return anchor


def rms_db(samples: np.ndarray) -> float:
    x = samples.astype(np.float64) / 32768
    return float(10 * np.log10(np.mean(x**2) + 1e-12))
