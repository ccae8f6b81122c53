"""Does the mouth follow the sound? Measured from frames decoded off a real node's gRPC
stream, on speech no threshold of the engine was set on.

    python benchmarks/portrait_sync.py [PHOTO ...] [--packaged] [--voice en-gb-x-rp+m3]

A node runs in-process on loopback; the SDK opens a render session per photo and
sends: 1.5 s of silence, a sentence as raw speech audio (no phonemes: the engine sees
only the sound), 2 s of silence, a second sentence as text (spoken by the node in the
voice's language, so phoneme timing drives the mouth), 1.5 s of silence. The speech
comes from espeak-ng voices other than the two the audio thresholds were set on (en-us
and en-gb+f3): by default British RP with the "m3" variant for the audio sentence. From the decoded frames and the audio slice that plays with each:
- envelope correlation: mouth aperture (dark area between the lips, from pixels) against
  the speech RMS per frame smoothed over three frames, for the audio-driven and the
  text-driven sentence;
- lag: the shift (frames, -5..5) that maximises that correlation; 0 +- 1 is in sync;
  positive means the mouth moves after the sound;
- motion: mean absolute frame-to-frame luma change over the face, in speech and in
  silence (and for the head alone, the mouth's box left out), and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np
from avatar_client import AsyncAvatarClient

from avatar_node.engines.base import StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.engine import canvas_rig
from avatar_node.engines.portrait.evaluation import mouth_aperture, mouth_box
from avatar_node.server import NodeConfig, start_background_node
from avatar_node.speech.tts import SpeechSynthesizer

SAMPLE = Path(__file__).resolve().parents[1] / "avatar_node" / "assets" / "sample_portrait.jpg"
AUDIO_SENTENCE = "Good morning. I walked along the river this week, and the water was cold and bright."
TEXT_SENTENCE = "Tomorrow we will visit the old market, buy some fresh bread, and sit by the fountain."
W, H, FPS = 848, 480, 25


async def run_session(target: str, photo: bytes, voice: str) -> list:
    with SpeechSynthesizer() as tts:
        said = tts.synthesize(AUDIO_SENTENCE, voice=voice)
    rate = said.sample_rate
    pcm = np.asarray(said.samples)
    if pcm.dtype != np.int16:
        pcm = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(rate * seconds), np.int16)

    async with AsyncAvatarClient(target) as client:
        # The node takes language codes; a "+variant" is for the local synthesiser only.
        node_voice = voice.partition("+")[0]
        session = await client.start_session(photo, width=W, height=H, fps=FPS, mode="render", voice=node_voice)
        async with session:
            await session.send_audio(silence(1.5), rate, end_of_turn=True)
            await session.send_audio(pcm, rate, end_of_turn=True)
            await session.send_audio(silence(2.0), rate, end_of_turn=True)
            await session.say(TEXT_SENTENCE, voice=node_voice)
            await session.send_audio(silence(1.5), rate, end_of_turn=True)
            await session.end()
            return [frame async for frame in session.frames()]


def luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 5) -> tuple[int, float]:
    """The shift of `a` after `b` (frames) with the highest correlation, and that correlation."""
    best = (0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        x = a[lag:] if lag >= 0 else a[:lag]
        y = b[: len(b) - lag] if lag >= 0 else b[-lag:]
        r = float(np.corrcoef(x, y)[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best


def analyse(name: str, photo: bytes, frames: list) -> dict[str, float]:
    engine = PortraitEngine()
    identity = engine.prepare(photo)
    options = StreamOptions(W, H, FPS)
    box = mouth_box(identity, options)
    x0, y0, x1, y1 = canvas_rig(identity.data, options)[1].roi
    aperture = np.array([mouth_aperture(f.video.image, box) for f in frames])
    energy = np.array(
        [np.sqrt(np.mean((f.audio.astype(np.float32) / 32768) ** 2)) if len(f.audio) else 0.0 for f in frames]
    )
    envelope = np.convolve(energy, np.ones(3) / 3, mode="same")
    # Speech: audible frames (the silent turns are turns too, so the node's speaking flag
    # does not tell them apart). The two sentences: runs of speech with pauses under
    # 0.6 s bridged; the first is audio-driven, the second text-driven.
    speaking = energy > 0.005
    bridged = np.convolve(speaking.astype(float), np.ones(15), mode="same") > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], bridged.astype(int), [0]])))
    runs = sorted(zip(edges[::2], edges[1::2]), key=lambda se: se[1] - se[0], reverse=True)[:2]
    runs.sort()
    result: dict[str, float] = {}
    for label, (s, e) in zip(("audio", "text"), runs[:2]):
        lo, hi = max(s - 5, 0), min(e + 5, len(frames))
        r = float(np.corrcoef(aperture[lo:hi], envelope[lo:hi])[0, 1])
        lag, r_best = best_lag(aperture[lo:hi], envelope[lo:hi])
        result[f"{label}_r"], result[f"{label}_lag"], result[f"{label}_r_best"] = r, lag, r_best

    faces = [luma(f.video.image[y0:y1, x0:x1]) for f in frames]
    change = np.array([0.0] + [float(np.abs(a - b).mean()) for a, b in zip(faces[1:], faces[:-1])])
    mx0, my0, mx1, my1 = box
    keep = np.ones((y1 - y0, x1 - x0), bool)
    keep[max(my0 - y0, 0) : max(my1 - y0, 0), max(mx0 - x0, 0) : max(mx1 - x0, 0)] = False
    head_change = np.array([0.0] + [float(np.abs(a - b)[keep].mean()) for a, b in zip(faces[1:], faces[:-1])])
    mouth_change = np.array(
        [0.0] + [float(np.abs(a - b)[~keep].mean()) for a, b in zip(faces[1:], faces[:-1])]
    )
    # Silence: frames at least half a second away from any speech.
    near = np.convolve(speaking.astype(float), np.ones(25), mode="same") > 0
    silent = ~near
    silent[:5] = False
    result["motion_speech"] = float(change[speaking].mean())
    result["motion_silence"] = float(change[silent].mean())
    result["motion_ratio"] = result["motion_speech"] / max(result["motion_silence"], 1e-6)
    result["head_speech"] = float(head_change[speaking].mean())
    result["head_silence"] = float(head_change[silent].mean())
    result["mouth_speech"] = float(mouth_change[speaking].mean())
    result["mouth_silence"] = float(mouth_change[silent].mean())
    result["aperture_silence_max"] = float(aperture[silent].max())
    print(
        f"{name}: {len(frames)} frames | audio-driven r {result.get('audio_r', float('nan')):.2f} "
        f"(best {result.get('audio_r_best', float('nan')):.2f} at lag {result.get('audio_lag', 0):+.0f}) | "
        f"text-driven r {result.get('text_r', float('nan')):.2f} "
        f"(best {result.get('text_r_best', float('nan')):.2f} at lag {result.get('text_lag', 0):+.0f}) | "
        f"motion speech/silence {result['motion_ratio']:.1f} "
        f"(face {result['motion_speech']:.2f}/{result['motion_silence']:.2f}; head {result['head_speech']:.2f}/"
        f"{result['head_silence']:.2f}; mouth region {result['mouth_speech']:.2f}/{result['mouth_silence']:.2f}) | "
        f"widest mouth in silence {result['aperture_silence_max']:.2f} px"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--packaged", action="store_true", help="also the real photos shipped in PyPI packages")
    parser.add_argument("--voice", default="en-gb-x-rp+m3", help="an espeak-ng voice the engine was not tuned on")
    args = parser.parse_args()
    photos = list(args.photos) or [SAMPLE]
    if args.packaged:
        sys.path.insert(0, str(Path(__file__).parent))
        from portrait_sheets import packaged_photos

        photos += packaged_photos()
    print(f"voice {args.voice}; {W}x{H} at {FPS} fps; frames decoded from the node's H.264 stream")
    rows = []

    async def run_all(target: str) -> list[list]:
        return [await run_session(target, path.read_bytes(), args.voice) for path in photos]

    with start_background_node(NodeConfig(port=0)) as node:
        sessions = asyncio.run(run_all(node.target))
    for path, frames in zip(photos, sessions):
        rows.append(analyse(path.stem, path.read_bytes(), frames))
    if len(rows) > 1:
        keys = ("audio_r", "audio_lag", "text_r", "text_lag", "motion_ratio", "head_silence", "mouth_speech")
        means = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
        print("mean over photos: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
