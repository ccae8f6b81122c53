"""Putting the face models into the package: pinned hashes, an offline source, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avatar_node.engines.portrait import model_files
from avatar_node.engines.portrait.models import find_model_dir


def test_the_installed_package_holds_the_models_and_their_notice():
    folder = model_files.packaged_dir()
    assert model_files.missing(folder) == []
    assert find_model_dir() == folder
    notice = (folder / "NOTICE").read_text()
    assert "Apache License, Version 2.0" in notice and "MediaPipe" in notice
    assert "Apache License" in (folder / "LICENSE-Apache-2.0.txt").read_text()


def test_offline_source_folder_is_checked_and_copied(tmp_path: Path, monkeypatch):
    source = tmp_path / "source"
    shutil.copytree(model_files.packaged_dir(), source)
    monkeypatch.setenv(model_files.SOURCE_ENV, str(source))
    dest = model_files.ensure(tmp_path / "dest")
    assert model_files.missing(dest) == [] and not list(dest.glob(".*.part"))


def test_a_changed_model_is_refused_by_name(tmp_path: Path):
    source = tmp_path / "source"
    shutil.copytree(model_files.packaged_dir(), source)
    (source / "iris_landmark.tflite").write_bytes(b"something else")
    with pytest.raises(model_files.ModelFilesError, match="iris_landmark.tflite"):
        model_files.ensure(tmp_path / "dest", source=source)
    assert not (tmp_path / "dest" / "face_landmark.tflite").exists()  # nothing half-done


def test_a_missing_model_folder_says_how_to_get_them(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("avatar_node.engines.portrait.models.packaged_dir", lambda: tmp_path)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.delenv("AVATAR_FACE_MODEL_DIR", raising=False)
    from avatar_node.engines.portrait.models import FaceModelsUnavailable

    with pytest.raises(FaceModelsUnavailable, match="pip install --force-reinstall --no-deps avatar-node"):
        find_model_dir()
