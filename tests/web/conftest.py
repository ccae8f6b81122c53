"""Real peers for the web page: a node serving it on loopback, headless Chromium driven over the
DevTools protocol, and helpers to measure what the page shows and plays.

Each Chromium gets a fresh profile, an ephemeral DevTools port and no network besides the node.
Where Chromium or the [web] extra is missing the tests skip with the reason; under CI (CI=true)
they fail.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
import wave
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


for _module in ("aiortc", "aiohttp", "websocket"):
    try:
        __import__(_module)
    except ImportError:
        _skip_or_fail(f"{_module} is not installed (pip install -e '.[web,dev]')")

import websocket  # noqa: E402

from avatar_node.engines.base import StreamOptions  # noqa: E402
from avatar_node.engines.portrait import PortraitEngine  # noqa: E402
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box  # noqa: E402
from avatar_node.server import BackgroundNode, NodeConfig, start_background_node  # noqa: E402

from ..support.waits import wait_until  # noqa: E402

#: The size the page asks for in these tests (small: two shared cores run node and browser).
W, H = 512, 288


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def mouth(photo: bytes) -> tuple[int, int, int, int]:
    """Where the mouth is in a W x H frame of the sample portrait."""
    identity = PortraitEngine().prepare(photo)
    return mouth_box(identity, StreamOptions(W, H, 25.0))


def start_node(**config: Any) -> BackgroundNode:
    config.setdefault("max_sessions", 4)
    return start_background_node(NodeConfig(port=0, web_port=0, grace_s=2.0, **config))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    return wait_until(predicate, timeout, what, interval)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# ---------------------------------------------------------------------------------- Chromium


class DevTools:
    """One page target over the DevTools protocol (commands only; events are skipped)."""

    def __init__(self, ws_url: str) -> None:
        self._ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """Run JS in the page (awaiting a promise) and return its value."""
        self._ws.settimeout(timeout_s + 5)
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                           timeout=int(timeout_s * 1000))
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"page script failed: {text}")
        return result.get("result", {}).get("value")

    def wait(self, expression: str, timeout: float, what: str) -> Any:
        return wait_for(lambda: self.evaluate(expression), timeout, what, interval=0.2)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        with suppress(Exception):
            self._ws.close()


class Chromium:
    """Headless Chromium with a fresh profile; `open(url)` gives a DevTools page."""

    def __init__(self, extra_args: list[str] = (), window: tuple[int, int] = (900, 1000)) -> None:  # type: ignore[assignment]
        binary = chromium_binary()
        assert binary is not None
        self.profile = Path(tempfile.mkdtemp(prefix="avatar-web-chromium-"))
        args = [
            binary, "--headless=new", "--no-sandbox", f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0", "--remote-allow-origins=*",
            "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
            # Nothing but the node: no background requests, updates, sync or metrics.
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-domain-reliability", "--disable-breakpad",
            "--disable-client-side-phishing-detection", "--metrics-recording-only", "--no-first-run",
            "--no-default-browser-check", "--no-pings", "--password-store=basic",
            # Raw host candidates: mDNS names would need multicast to resolve.
            "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,OptimizationHints,MediaRouter,"
            "DialMediaRouteProvider,AutofillServerCommunication",
            "--disable-gpu", "--mute-audio",
            f"--window-size={window[0]},{window[1]}",
            *extra_args,
            "about:blank",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        try:
            port_file = self.profile / "DevToolsActivePort"
            wait_for(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2, 30,
                     "Chromium's DevTools port")
            self.port = int(port_file.read_text().splitlines()[0])
        except BaseException:
            self.kill()
            raise

    def _json(self, path: str, method: str = "GET") -> Any:
        status, _, body = http(method, f"http://127.0.0.1:{self.port}{path}")
        assert status == 200, (path, status, body[:200])
        return json.loads(body)

    def open(self, url: str) -> tuple[DevTools, str]:
        """A new tab at `url`: (its DevTools connection, its target id)."""
        target = self._json("/json/new?about:blank", method="PUT")
        page = DevTools(target["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Page.navigate", url=url)
        return page, target["id"]

    def close_tab(self, target_id: str) -> None:
        status, _, _ = http("GET", f"http://127.0.0.1:{self.port}/json/close/{target_id}")
        assert status == 200

    def kill(self) -> None:
        """Gone at once, without a word to anyone (SIGKILL to the whole process group)."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@pytest.fixture(scope="session")
def chromium_available() -> None:
    if chromium_binary() is None:
        _skip_or_fail("chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser(chromium_available: None) -> Iterator[Chromium]:
    chrome = Chromium()
    try:
        yield chrome
    finally:
        chrome.stop()


# ---------------------------------------------------------------------------------- the page


def open_page(browser: Chromium, url: str, timeout: float = 30.0) -> tuple[DevTools, str]:
    """Open the page (it starts itself with ?autostart=1) and wait until video plays."""
    page, target = browser.open(url)
    page.wait("typeof avatarPage !== 'undefined' && document.readyState === 'complete'", 20, "the page to load")
    return page, target


def wait_playing(page: DevTools, timeout: float = 30.0) -> None:
    page.wait("avatarPage.pc && avatarPage.pc.connectionState === 'connected' && "
              "document.getElementById('avatar').videoWidth > 0 && "
              "document.getElementById('avatar').currentTime > 0.3", timeout, "live video in the page")


#: Grabs what the <video> shows into a canvas: every `every_ms`, the whole picture (small, for
#: likeness) and the mouth box at full resolution, each as a PNG data URL.
GRAB_SCRIPT = """
(async () => {
  const video = document.getElementById('avatar');
  const [x0, y0, x1, y1] = %(box)s;
  const full = document.createElement('canvas'); full.width = %(w)d; full.height = %(h)d;
  const crop = document.createElement('canvas'); crop.width = x1 - x0; crop.height = y1 - y0;
  const small = document.createElement('canvas'); small.width = 128; small.height = 72;
  const out = [];
  const end = performance.now() + %(ms)d;
  while (performance.now() < end) {
    full.getContext('2d').drawImage(video, 0, 0, %(w)d, %(h)d);
    crop.getContext('2d').drawImage(full, x0, y0, x1 - x0, y1 - y0, 0, 0, x1 - x0, y1 - y0);
    small.getContext('2d').drawImage(full, 0, 0, 128, 72);
    out.push({t: performance.now(), crop: crop.toDataURL('image/png'), small: small.toDataURL('image/png'),
              voice: avatarPage.voiceRms, shown: video.currentTime});
    await new Promise(r => setTimeout(r, %(every)d));
  }
  return out;
})()
"""


@dataclass
class Grab:
    t: float
    crop: np.ndarray  # the mouth box, RGB
    small: np.ndarray  # the whole picture at 128x72, RGB
    voice: float  # the page's WebAudio RMS of the avatar's voice at that moment
    shown: float  # the video's currentTime


def decode_png(data_url: str) -> np.ndarray:
    from PIL import Image

    raw = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def grab_frames(page: DevTools, box: tuple[int, int, int, int], seconds: float, every_ms: int = 80) -> list[Grab]:
    script = GRAB_SCRIPT % {"box": list(box), "w": W, "h": H, "ms": int(seconds * 1000), "every": every_ms}
    raw = page.evaluate(script, timeout_s=seconds + 30)
    return [Grab(g["t"], decode_png(g["crop"]), decode_png(g["small"]), float(g["voice"]), float(g["shown"]))
            for g in raw]


def apertures(grabs: list[Grab], box: tuple[int, int, int, int]) -> np.ndarray:
    width, height = box[2] - box[0], box[3] - box[1]
    return np.array([mouth_aperture(g.crop, (0, 0, width, height)) for g in grabs])


def speech_wav(path: Path, text: str, pause_s: float = 1.0, rate: int = 48000) -> Path:
    """Speech from the node's own synthesiser, as a WAV Chromium can use as its microphone."""
    import av

    from avatar_node.speech.tts import SpeechSynthesizer

    synth = SpeechSynthesizer()
    try:
        clip = synth.synthesize(text)
    finally:
        synth.close()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(clip.samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = clip.sample_rate
    pieces = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    pause = np.zeros(int(pause_s * rate), np.int16)
    samples = np.concatenate([pause, *pieces, pause]).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def node_sessions(node: BackgroundNode) -> tuple[int, int]:
    """(web sessions, sessions on the runtime) as the node sees them now."""
    server = node.server
    assert server.web is not None and server.runtime is not None
    return len(server.web.sessions), server.runtime.status().active_sessions


@pytest.fixture(scope="session")
def reference_small(photo: bytes) -> np.ndarray:
    """An idle frame of the sample avatar at W x H rendered in process, shrunk to 128x72 like the grabs."""
    import asyncio

    from PIL import Image

    from avatar_node.pipeline import AVFrame, AvatarRuntime, SessionOptions

    async def render() -> np.ndarray:
        async with AvatarRuntime(max_sessions=1, text_to_speech=False) as runtime:
            stream = await runtime.open_stream(photo, SessionOptions(live=False, video="rgb", width=W, height=H))
            await stream.push_speech(np.zeros(4800, np.int16), 48000, end_of_turn=True)
            await stream.end()
            async for item in stream:
                if isinstance(item, AVFrame) and item.image is not None:
                    image = item.image
                    break
            await stream.aclose()
            return image

    image = asyncio.run(render())
    return np.asarray(Image.fromarray(image).resize((128, 72), Image.Resampling.BILINEAR))


def likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two same-size RGB pictures (1 = the same picture)."""
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(x, y)[0, 1])


def browser_audio(page: DevTools) -> dict[str, float]:
    """The page's inbound audio figures from getStats()."""
    return page.evaluate("""(async () => { let a = {};
      (await avatarPage.pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'audio') a = s; });
      return {received: a.totalSamplesReceived || 0, concealed: a.concealedSamples || 0,
              discarded: a.packetsDiscarded || 0, lost: a.packetsLost || 0}; })()""")


class WhepViewer:
    """A WHEP client other than the page: aiortc receiving the avatar's video and audio."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.base = base_url.rstrip("/")
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video: list[Any] = []
        self.audio: list[Any] = []
        self.resource: str | None = None
        self._readers: list[Any] = []

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def start(self, query: str = f"size={W}x{H}") -> tuple[int, str]:
        """POST the offer; (status, body). On 201 the answer is applied and media flows."""
        import asyncio

        import aiohttp
        from aiortc import RTCSessionDescription

        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

        async def read(track: Any) -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                (self.video if track.kind == "video" else self.audio).append(frame)

        self.pc.on("track", lambda track: self._readers.append(asyncio.ensure_future(read(track))))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.base}/whep?{query}", data=self.pc.localDescription.sdp,
                                    headers=self._headers("application/sdp")) as response:
                body = await response.text()
                if response.status == 201:
                    self.resource = response.headers["Location"]
                    await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
                return response.status, body

    async def request(self, method: str, path: str, json_body: Any = None) -> tuple[int, Any]:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.base + path, json=json_body, headers=self._headers()) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text) if text else None
                except ValueError:
                    return response.status, text

    async def delete(self) -> int:
        assert self.resource is not None
        status, _ = await self.request("DELETE", self.resource)
        return status

    async def close(self) -> None:
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()
