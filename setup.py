"""Build hooks: put MediaPipe's face models into the package while it is built.

Everything else about the package is in pyproject.toml. The models are fetched (and
checked against pinned hashes) by avatar_node/engines/portrait/model_files.py, loaded
here by path because nothing is installed yet when this runs.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
MODEL_FILES = HERE / "avatar_node" / "engines" / "portrait" / "model_files.py"


def _ensure_face_models() -> None:
    spec = importlib.util.spec_from_file_location("_avatar_face_model_files", MODEL_FILES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ensure(HERE / "avatar_node" / "engines" / "portrait" / "face_models")


class BuildPyWithModels(build_py):
    def run(self) -> None:
        _ensure_face_models()
        super().run()


class SdistWithModels(sdist):
    def run(self) -> None:
        _ensure_face_models()
        super().run()


setup(cmdclass={"build_py": BuildPyWithModels, "sdist": SdistWithModels})
