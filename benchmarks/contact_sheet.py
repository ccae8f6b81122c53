"""A contact sheet: frames of the portrait engine at fixed times, for a person to look at.

    python benchmarks/contact_sheet.py PHOTO -o sheet.png [--columns 6] [--full]

The avatar says a sentence (text-driven: phoneme timing plus its audio), stays silent,
then listens to a user speaking (with a nod requested midway). Each tile is the face
region of the 848x480 frame at a fixed time (`--full` tiles whole frames), labelled
with its time and state.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from avatar_node.engines.base import SPEECH_SAMPLE_RATE, StreamOptions
from avatar_node.engines.portrait import PortraitEngine
from avatar_node.engines.portrait.drive import frame_conditions, resample_to_speech_rate
from avatar_node.engines.portrait.evaluation import mouth_box
from avatar_node.speech.tts import SpeechSynthesizer

FPS = 25
SPEECH_TEXT = "Hello! My name is Pat. Would you like to hear about the moon?"
USER_TEXT = "Yes please, tell me everything you know about it."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("contact_sheet.png"))
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--full", action="store_true", help="tile whole frames, not the face region")
    args = parser.parse_args()

    engine = PortraitEngine()
    identity = engine.prepare(args.photo.read_bytes())
    options = StreamOptions(width=848, height=480, fps=FPS, seed=3)

    with SpeechSynthesizer() as tts:
        said = tts.synthesize(SPEECH_TEXT)
        heard = tts.synthesize(USER_TEXT)
    speech = resample_to_speech_rate(said.samples, said.sample_rate)
    user = resample_to_speech_rate(heard.samples, heard.sample_rate) * 0.7
    speak_s = said.duration_s
    silence_s = 1.6
    listen_start = speak_s + silence_s
    total_s = listen_start + heard.duration_s + 1.0
    n = int(total_s * FPS)
    listen = np.zeros(int(total_s * SPEECH_SAMPLE_RATE) + SPEECH_SAMPLE_RATE, np.float32)
    start = int(listen_start * SPEECH_SAMPLE_RATE)
    listen[start : start + len(user)] = user
    nod_frame = int((listen_start + heard.duration_s * 0.5) * FPS)

    stream = engine.open(identity, options)
    conds = frame_conditions(
        n, FPS, engine.info.audio_lookahead_ms, speech=speech, phonemes=said.phonemes,
        listen=listen, behaviours={nod_frame: ["nod"]},
    )
    frames = [stream.step(c)[0] for c in conds]
    stream.close()

    # Fixed times: most tiles during speech, a few in silence and listening.
    times = list(np.linspace(0.2, speak_s - 0.1, 12)) + list(np.linspace(speak_s + 0.3, total_s - 0.2, 6))
    crop = _face_crop(identity, options) if not args.full else (0, 0, options.width, options.height)
    tiles = []
    for t in times:
        k = min(int(round(t * FPS)), n - 1)
        x0, y0, x1, y1 = crop
        tile = np.ascontiguousarray(frames[k][y0:y1, x0:x1])
        state = "speaking" if t < speak_s else ("silent" if t < listen_start else "listening")
        phoneme = next((p.phoneme for p in said.phonemes if p.start_s <= t < p.end_s), "") if t < speak_s else ""
        label = f"{t:4.2f}s {state} {phoneme}".rstrip()
        cv2.rectangle(tile, (0, 0), (tile.shape[1], 16), (0, 0, 0), -1)
        cv2.putText(tile, label, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    cols = args.columns
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + cols], 1) for i in range(0, len(tiles), cols)]
    sheet = np.concatenate(rows, 0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.output} ({sheet.shape[1]}x{sheet.shape[0]}, {len(times)} frames of {n})")


def _face_crop(identity, options: StreamOptions) -> tuple[int, int, int, int]:
    """A square around the face on the canvas: from the mouth box, grown to the head."""
    x0, y0, x1, y1 = mouth_box(identity, options)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - (y1 - y0) * 1.2
    half = max(x1 - x0, y1 - y0) * 1.6
    half = min(half, options.height / 2)
    cx = min(max(cx, half), options.width - half)
    cy = min(max(cy, half), options.height - half)
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


if __name__ == "__main__":
    main()
