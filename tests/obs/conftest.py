"""Real peers for the OBS integration: OBS Studio under Xvfb, nginx-rtmp, a node, the command itself.

Every run gets its own display (Xvfb -displayfd), ports, HOME and runtime dirs, so two runs
at once cannot collide. OBS is kept light: a 640x360 canvas at 15 fps with the preview off.
Where a peer is not installed the tests skip with the reason; under CI (CI=true) they fail.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import pytest

if os.environ.get("CI", "").lower() == "true":
    import obsws_python  # noqa: F401  (CI installs the [obs] extra: its absence is a failure there)
else:
    pytest.importorskip("obsws_python", reason="the [obs] extra is not installed")

from avatar_obs.obs_ws import ObsAddress, ObsConnection, ObsError  # noqa: E402  (silences the SDK's logging)

from ..support.waits import free_port  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[2]


def find(binary: str) -> str | None:
    """A program on PATH, or in /usr/sbin (where nginx lives, off a normal user's PATH)."""
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")


def require(*binaries: str) -> None:
    missing = [b for b in binaries if find(b) is None]
    if missing:
        reason = (
            f"{', '.join(missing)} not installed (apt-get install obs-studio xvfb nginx libnginx-mod-rtmp)"
        )
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            process.kill()
        process.wait(5)


# ---------------------------------------------------------------------------------------- OBS


@dataclass
class ObsStudio:
    address: ObsAddress
    home: Path
    display: str
    canvas: tuple[int, int] = (640, 360)

    def connect(self) -> ObsConnection:
        return ObsConnection(self.address)


def _obs_config(home: Path, port: int, password: str, canvas: tuple[int, int]) -> None:
    config = home / ".config" / "obs-studio"
    profile = config / "basic" / "profiles" / "Test"
    profile.mkdir(parents=True)
    (config / "global.ini").write_text(
        "[General]\nFirstRun=true\n"
        "[Basic]\nProfile=Test\nProfileDir=Test\nSceneCollection=Test\nSceneCollectionFile=Test\n"
        "[BasicWindow]\nPreviewEnabled=false\n"
        "[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\n"
        f"ServerPort={port}\nAlertsEnabled=false\nAuthRequired=true\nServerPassword={password}\n"
    )
    width, height = canvas
    (profile / "basic.ini").write_text(
        "[General]\nName=Test\n"
        f"[Video]\nBaseCX={width}\nBaseCY={height}\nOutputCX={width}\nOutputCY={height}\nFPSType=1\nFPSInt=15\n"
        "[Audio]\nSampleRate=48000\nChannelSetup=Stereo\n"
    )


def start_xvfb(workdir: Path) -> tuple[subprocess.Popen, str]:
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "xvfb.log", "wb"),
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        stop_process(xvfb)
        pytest.fail("Xvfb did not start (see xvfb.log)")
    return xvfb, f":{number}"


@pytest.fixture(scope="session")
def obs_studio() -> Iterator[ObsStudio]:
    require("obs", "Xvfb")
    with tempfile.TemporaryDirectory(prefix="avatar-obs-test-") as tmp:
        home = Path(tmp)
        runtime = home / "runtime"
        runtime.mkdir(mode=0o700)
        port, password = free_port(), secrets.token_urlsafe(12)
        canvas = (640, 360)
        _obs_config(home, port, password, canvas)
        xvfb, display = start_xvfb(home)
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(runtime),
            "DISPLAY": display,
            "XDG_CONFIG_HOME": str(home / ".config"),
        }
        env.pop("OBS_WEBSOCKET_PASSWORD", None)
        obs = subprocess.Popen(
            ["obs", "--multi", "--disable-updater", "--disable-shutdown-check"],
            cwd=home,
            env=env,
            stdout=open(home / "obs.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        address = ObsAddress("127.0.0.1", port, password)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    ObsConnection(address, timeout=2).close()
                    break
                except ObsError:
                    if obs.poll() is not None or time.monotonic() > deadline:
                        log = (home / "obs.log").read_text(errors="replace")[-2000:]
                        pytest.fail(f"OBS did not open its websocket:\n{log}")
                    time.sleep(0.3)
            yield ObsStudio(address, home, display, canvas)
        finally:
            stop_process(obs, signal.SIGTERM, 15)
            stop_process(xvfb)


# -------------------------------------------------------------------------------------- nginx


class NginxRtmp:
    """nginx with the RTMP module on a free loopback port, recording what is published."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.records = workdir / "records"
        self.records.mkdir()
        (workdir / "logs").mkdir()
        module = next(
            (
                p
                for p in (
                    "/usr/lib/nginx/modules/ngx_rtmp_module.so",
                    "/usr/share/nginx/modules/ngx_rtmp_module.so",
                )
                if Path(p).exists()
            ),
            None,
        )
        if module is None:
            reason = "the nginx RTMP module is not installed (apt-get install libnginx-mod-rtmp)"
            if IN_CI:
                pytest.fail(reason)
            pytest.skip(reason)
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(
            f"load_module {module};\n"
            "daemon off;\nmaster_process off;\n"
            f"pid {workdir}/nginx.pid;\nerror_log {workdir}/logs/error.log warn;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; application live {{ live on; wait_key on; "
            f"record all; record_path {self.records}; record_unique on; }} }} }}\n"
        )
        self.process: subprocess.Popen | None = None

    def url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [find("nginx") or "nginx", "-c", str(self.conf), "-p", str(self.dir) + "/"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "logs" / "stderr.log", "ab"),
        )
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("nginx did not start: " + (self.dir / "logs" / "stderr.log").read_text())
            time.sleep(0.1)

    def kill(self) -> None:
        """Gone at once, as a crash: no goodbye to publishers or players."""
        if self.process is not None:
            stop_process(self.process, signal.SIGKILL)
            self.process = None


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    require("nginx")
    server = NginxRtmp(tmp_path / "nginx")
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --------------------------------------------------------------------------------------- node


@pytest.fixture(scope="session")
def node():
    server = pytest.importorskip("avatar_node.server")
    running = server.start_background_node(server.NodeConfig(host="127.0.0.1", port=0, max_sessions=6))
    yield running
    running.stop()


# ---------------------------------------------------------------------------- the command


@dataclass
class Command:
    """`avatar obs ...` in a subprocess, its stderr collected line by line."""

    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._cond:
                self.lines.append(raw.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0, start: int = 0) -> re.Match[str]:
        """The first line at or after `start` matching `pattern`; fails with the output so far."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader_alive()):
                    raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n" + self.output)
                self._cond.wait(min(left, 0.2))

    def _reader_alive(self) -> bool:
        return self._reader.is_alive()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl+C, as a host would; returns the exit status."""
        stop_process(self.process, signal.SIGINT, timeout)
        self._reader.join(5)
        return int(self.process.returncode)

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for a command that ends by itself (--duration, an error)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the command did not end within {timeout} s:\n{self.output}") from None
        self._reader.join(5)
        return int(self.process.returncode)


def run_avatar_obs(*args: str, env: dict[str, str] | None = None) -> Command:
    process = subprocess.Popen(
        [sys.executable, "-m", "avatar_client.cli", "obs", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    command = Command(process)
    command._reader = threading.Thread(target=command._read, daemon=True)  # type: ignore[attr-defined]
    command._reader.start()  # type: ignore[attr-defined]
    return command


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    """Commands started by a test; any still running at the end are stopped."""
    started: list[Command] = []
    yield started
    for command in started:
        stop_process(command.process, signal.SIGINT, 20)


@pytest.fixture
def start(commands: list[Command]):  # type: ignore[no-untyped-def]
    def start_command(*args: str, env: dict[str, str] | None = None) -> Command:
        command = run_avatar_obs(*args, env=env)
        commands.append(command)
        return command

    return start_command


# ----------------------------------------------------------------------------- UDP capture


class UdpCapture:
    """Receives the MPEG-TS a command sends, optionally forwarding every datagram (a tee)."""

    def __init__(self, forward_to: int | None = None, keep_bytes: int = 64 * 1024 * 1024) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = int(self.socket.getsockname()[1])
        self._forward = ("127.0.0.1", forward_to) if forward_to else None
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if forward_to else None
        self._chunks: deque[tuple[float, bytes]] = deque()
        self._kept = 0
        self._limit = keep_bytes
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65536)
            except (socket.timeout, OSError):
                continue
            if self._out is not None and self._forward is not None:
                with suppress(OSError):
                    self._out.sendto(data, self._forward)
            with self._lock:
                self._chunks.append((time.monotonic(), data))
                self._kept += len(data)
                while self._kept > self._limit:
                    self._kept -= len(self._chunks.popleft()[1])

    def bytes_since(self, since: float = 0.0) -> bytes:
        with self._lock:
            return b"".join(d for t, d in self._chunks if t >= since)

    @property
    def received(self) -> int:
        with self._lock:
            return self._kept

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()
        if self._out is not None:
            self._out.close()


@pytest.fixture
def udp_capture() -> Iterator[type[UdpCapture]]:
    made: list[UdpCapture] = []

    def make(forward_to: int | None = None) -> UdpCapture:
        capture = UdpCapture(forward_to)
        made.append(capture)
        return capture

    yield make  # type: ignore[misc]
    for capture in made:
        capture.close()


@dataclass
class Decoded:
    video_pts: list[float]  # seconds
    keyframes: list[float]
    images: list[np.ndarray]  # RGB, every frame kept when asked for
    audio: np.ndarray  # float32 mono
    audio_rate: int
    audio_start: float
    codecs: tuple[str, str]


def decode_stream(data: bytes, fmt: str | None = "mpegts", keep_images: bool = True) -> Decoded:
    """Decode a captured stream completely (video frames with their timestamps, audio samples)."""
    container = av.open(io.BytesIO(data), format=fmt)
    video_pts: list[float] = []
    keyframes: list[float] = []
    images: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    audio_start = None
    rate = 0
    codecs = ("", "")
    with container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        names = {s.type: s.codec_context.name for s in streams}
        codecs = (names.get("video", ""), names.get("audio", ""))
        for packet in container.demux(*streams):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            for frame in frames:
                if packet.stream.type == "video":
                    if frame.pts is None:
                        continue
                    t = float(frame.pts * frame.time_base)
                    video_pts.append(t)
                    if frame.key_frame:
                        keyframes.append(t)
                    if keep_images:
                        images.append(frame.to_ndarray(format="rgb24"))
                else:
                    if audio_start is None and frame.pts is not None:
                        audio_start = float(frame.pts * frame.time_base)
                    rate = frame.sample_rate
                    samples = frame.to_ndarray()
                    audio.append(samples.mean(axis=0) if samples.ndim == 2 else samples)
    return Decoded(
        video_pts,
        keyframes,
        images,
        np.concatenate(audio).astype(np.float32) if audio else np.zeros(0, np.float32),
        rate,
        audio_start or 0.0,
        codecs,
    )


# ------------------------------------------------------------------------------ test media


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def voiced(seconds: float, rate: int = 48_000, pitch_hz: float = 150.0) -> np.ndarray:
    """Vowel-like int16 audio: harmonics under a syllable-rate envelope."""
    t = np.arange(round(seconds * rate)) / rate
    signal = sum(np.sin(2 * np.pi * pitch_hz * h * t) / h for h in range(1, 8))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t)
    signal = signal * envelope
    return (signal / np.abs(signal).max() * 0.5 * 32767).astype(np.int16)


# ------------------------------------------------------------------------ a stallable TCP path


class StallingProxy:
    """A TCP relay on loopback that can go silent on its open connections without closing them,
    as a stuck relay or a dead NAT mapping does; connections made afterwards work again."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = int(self._listener.getsockname()[1])
        self._stalled: set[int] = set()  # ids of connections that no longer pass data
        self._live: dict[int, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._next += 1
                ident = self._next
                self._live[ident] = [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(ident, a, b), daemon=True).start()

    def _pipe(self, ident: int, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.2)
        while not self._closed:
            try:
                data = source.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                stalled = ident in self._stalled
            if stalled:
                continue  # swallowed: the peer waits forever for bytes that never come
            try:
                sink.sendall(data)
            except OSError:
                break
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stall(self) -> None:
        with self._lock:
            self._stalled.update(self._live)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for pair in self._live.values():
                for sock in pair:
                    with suppress(OSError):
                        sock.close()


# ------------------------------------------------------------------------- a virtual microphone


@dataclass
class PulseAudio:
    """A private PulseAudio server with a virtual microphone: what is played into `sink` is
    what the default source `mic` hears."""

    env: dict[str, str]
    sink: str = "host_voice"
    mic: str = "host_mic"

    def play(self, wav: Path) -> None:
        subprocess.run(
            ["pacat", "--file-format=wav", "-d", self.sink, str(wav)], env=self.env, check=True, timeout=60
        )


@pytest.fixture
def pulse_audio(tmp_path: Path) -> Iterator[PulseAudio]:
    require("pulseaudio", "pactl", "pacat", "parec")
    home = tmp_path / "pulse"
    runtime = home / "runtime"
    runtime.mkdir(parents=True, mode=0o700)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "PULSE_SERVER": f"unix:{runtime}/pulse/native",
    }
    server = subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "-n",
            "-L",
            "module-native-protocol-unix",
            "-L",
            "module-always-sink",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "pulseaudio.log", "wb"),
    )
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("PulseAudio did not start: " + (home / "pulseaudio.log").read_text())
            time.sleep(0.1)
        audio = PulseAudio(env)
        for module in (
            ["module-null-sink", f"sink_name={audio.sink}", "rate=48000", "channels=1", "format=s16le"],
            ["module-remap-source", f"master={audio.sink}.monitor", f"source_name={audio.mic}"],
        ):
            subprocess.run(["pactl", "load-module", *module], env=env, check=True, capture_output=True)
        subprocess.run(["pactl", "set-default-source", audio.mic], env=env, check=True)
        yield audio
    finally:
        stop_process(server)
