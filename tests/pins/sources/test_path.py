"""The ``path`` kind: a model file inside the project."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from gguf_factory import write_tiny_gguf
from source_helpers import MakeProject, project_with

from pytest_smallmodel.common.errors import SourceError
from pytest_smallmodel.pins.sources import pull_model, resolve_model, verify_model


def test_path_source(make_project: MakeProject, tmp_path: Path) -> None:
    project = project_with(make_project, 'm = { path = "models/m.gguf" }')
    with pytest.raises(SourceError, match="does not exist"):
        resolve_model(project, project.models["m"])
    model = write_tiny_gguf(project.root / "models" / "m.gguf")
    pin = resolve_model(project, project.models["m"])
    assert pin.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert verify_model(project, pin).ok
    write_tiny_gguf(model, seed=1)
    changed = verify_model(project, pin)
    assert changed.status == "mismatch" and "lock --upgrade m" in changed.message
    model.unlink()
    assert "restore it" in verify_model(project, pin).message
    assert pull_model(project, pin).status == "missing"
