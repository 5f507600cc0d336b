"""Helpers shared by the tests of the source kinds (tests/pins/sources/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gguf_factory import write_tiny_gguf

from pytest_smallmodel.pins.project import Project, load_project

MakeProject = Callable[..., Path]


def gguf_bytes(tmp_path: Path, seed: int = 0, **kwargs: object) -> bytes:
    return write_tiny_gguf(tmp_path / f"src-{seed}.gguf", seed=seed, **kwargs).read_bytes()  # type: ignore[arg-type]


def project_with(make_project: MakeProject, models: str) -> Project:
    return load_project(make_project(models))


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.endswith((".tmp", ".incomplete"))]
