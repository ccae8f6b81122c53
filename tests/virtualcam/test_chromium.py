"""A real consumer: headless Chromium (no fake-device flags) lists the avatar's microphone and
records the speech from it with getUserMedia, as a meeting web app would."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import shutil
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from .conftest import RATE, assert_heard_as_spoken, require, resample, rms_db, speech_clip, stop_process, wait_until

PAGE = """<!doctype html><meta charset="utf-8"><title>meeting</title><script>
async function microphones() {
  const probe = await navigator.mediaDevices.getUserMedia({audio: true});
  probe.getTracks().forEach(t => t.stop());
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter(d => d.kind === "audioinput").map(d => ({id: d.deviceId, label: d.label}));
}
async function startRecording(deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia({audio: {
    deviceId: {exact: deviceId}, echoCancellation: false, noiseSuppression: false,
    autoGainControl: false, channelCount: 1}});
  const context = new AudioContext({sampleRate: 48000});
  const tapCode = `class Tap extends AudioWorkletProcessor {
    process(inputs) { const c = inputs[0][0]; if (c) this.port.postMessage(c.slice(0)); return true; }
  }
  registerProcessor("tap", Tap);`;
  await context.audioWorklet.addModule(URL.createObjectURL(new Blob([tapCode], {type: "text/javascript"})));
  const tap = new AudioWorkletNode(context, "tap");
  const chunks = [];
  tap.port.onmessage = e => chunks.push(e.data);
  context.createMediaStreamSource(stream).connect(tap);
  window.recording = {stream, context, chunks};
  return {rate: context.sampleRate, label: stream.getAudioTracks()[0].label};
}
function recordedSeconds() {
  return window.recording.chunks.reduce((a, c) => a + c.length, 0) / window.recording.context.sampleRate;
}
function stopRecording() {
  const r = window.recording;
  r.stream.getTracks().forEach(t => t.stop()); r.context.close();
  const n = r.chunks.reduce((a, c) => a + c.length, 0);
  const pcm = new Int16Array(n); let i = 0;
  for (const c of r.chunks) for (const x of c) pcm[i++] = Math.max(-32768, Math.min(32767, Math.round(x * 32768)));
  let s = ""; const bytes = new Uint8Array(pcm.buffer);
  for (let k = 0; k < bytes.length; k += 8192) s += String.fromCharCode.apply(null, bytes.subarray(k, k + 8192));
  return btoa(s);
}
</script>"""


class Page:
    """A Chromium tab driven over the DevTools protocol."""

    def __init__(self, websocket_url: str) -> None:
        import websocket

        self._ws = websocket.create_connection(websocket_url, timeout=30, suppress_origin=True)
        self._id = 0

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        self._id += 1
        self._ws.settimeout(timeout)
        self._ws.send(json.dumps({"id": self._id, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == self._id:
                result = reply["result"]
                if "exceptionDetails" in result:
                    raise AssertionError(f"{expression}: {result['exceptionDetails']}")
                return result["result"].get("value")

    def close(self) -> None:
        self._ws.close()


@pytest.fixture
def chromium(pulse) -> Iterator[Page]:  # type: ignore[no-untyped-def]
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or require("chromium", "chromium")
    pytest.importorskip("websocket", reason="websocket-client drives Chromium")
    site = Path(tempfile.mkdtemp(prefix="avcam-site-"))
    (site / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.func.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = Path(tempfile.mkdtemp(prefix="avcam-chromium-"))
    process = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required", "--no-first-run",
         "--disable-gpu", "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
         f"http://127.0.0.1:{server.server_address[1]}/index.html"],
        env=pulse.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    page = None
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 30, "Chromium's DevTools port")
        port = int(port_file.read_text().split()[0])

        def tab() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                pages = [t for t in json.load(reply) if t.get("type") == "page" and "index.html" in t.get("url", "")]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        page = Page(wait_until(tab, 30, "the meeting page"))
        wait_until(lambda: page.evaluate("typeof microphones === 'function'"), 15, "the page script")
        yield page
    finally:
        if page is not None:
            page.close()
        stop_process(process)
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(site, ignore_errors=True)


def test_chromium_lists_the_avatar_microphone_and_hears_the_speech(  # type: ignore[no-untyped-def]
    pulse, node, start_cam, chromium, monkeypatch
):
    name = "meeting"
    cam = start_cam("--target", node.target, "--no-camera", "--name", name, "--size", "320x240", pulse=pulse)
    cam.wait_for("connected: 127.0.0.1")

    microphones = chromium.evaluate("microphones()")
    labels = [m["label"] for m in microphones]
    print("Chromium lists:", labels)
    ours = [m for m in microphones if m["label"].startswith(f"Avatar microphone ({name})")]
    assert ours, labels
    started = chromium.evaluate(f"startRecording({json.dumps(ours[0]['id'])})")
    assert started["rate"] == RATE and started["label"].startswith("Avatar microphone"), started
    wait_until(lambda: chromium.evaluate("recordedSeconds()") > 0.5, 15, "Chromium to record")

    # An agent makes the avatar speak through the control endpoint.
    from avatar_client.virtualcam import CamControl

    samples, rate = speech_clip("This is the avatar speaking in your meeting.")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(pulse.runtime_dir))

    async def speak() -> dict[str, Any]:
        async with await CamControl.connect(name) as control:
            turn_id = await control.speak(samples, rate)
            return await control.wait_finished(turn_id, timeout=30)

    finished = asyncio.run(speak())
    assert not finished["interrupted"] and finished["played_ms"] > 1000, finished
    time.sleep(1.0)  # the end of the speech is still in the devices' buffers
    heard = np.frombuffer(base64.b64decode(chromium.evaluate("stopRecording()")), np.int16)
    assert cam.stop() == 0, cam.output()
    print(cam.output())

    spoken = resample(samples, rate)
    lag = assert_heard_as_spoken(spoken, heard, cam, recorder_glitches=1)  # Chromium's capture, under load
    assert rms_db(heard[:lag]) < rms_db(spoken) - 30  # quiet before the avatar spoke
