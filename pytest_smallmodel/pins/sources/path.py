"""``path``: a model file inside the project, pinned by its sha256 (nothing to download)."""

from __future__ import annotations

from pathlib import Path

from pytest_smallmodel.common.errors import ConfigError, SourceError
from pytest_smallmodel.pins.hashing import hash_local
from pytest_smallmodel.pins.lockfile import LockedModel, make_pin
from pytest_smallmodel.pins.project import ModelSpec, Project
from pytest_smallmodel.pins.source_specs import PathSpec
from pytest_smallmodel.pins.sources.base import Source


class PathSource(Source):
    spec = PathSpec()

    def resolve(self, project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
        path = project_file(project, spec.name, spec.source["path"])
        if path.is_dir():
            raise ConfigError(
                f"{project.pyproject}: [tool.smallmodel.models] {spec.name}: path = "
                f"{spec.source['path']!r} is a directory ({path}), not a model file. Name the "
                ".gguf file inside it."
            )
        if not path.is_file():
            raise SourceError(
                f"{spec.name}: path = {spec.source['path']!r} does not exist ({path}). Put the "
                "model file there or fix the path in [tool.smallmodel.models]."
            )
        sha256, size, facts = hash_local(project, path, progress)
        return make_pin(spec.name, sha256, size, spec.normalized_source(), facts)

    def candidate_path(self, project: Project, locked: LockedModel) -> Path | None:
        return project_file(project, locked.name, locked.source["path"])

    def expected_path(self, project: Project, locked: LockedModel) -> Path | None:
        # A missing project file is reported at its place in the project.
        return self.candidate_path(project, locked)

    def missing_fix(self, locked: LockedModel) -> str | None:
        return (
            f"The file is part of the project ({locked.source['path']}): restore it, or fix the "
            f"path in [tool.smallmodel.models] and run `smallmodel lock --upgrade {locked.name}`."
        )

    def mismatch_fix(self, locked: LockedModel) -> str | None:
        return (
            f"The file was changed: restore the pinned version, or if the change is intended run "
            f"`smallmodel lock --upgrade {locked.name}` and commit models.lock."
        )


def project_file(project: Project, name: str, relative: str) -> Path:
    """``relative`` under the project root, refusing one that leaves it through a symlink.

    The spec's text cannot contain '..' (checked with the spec); this applies the same rule to
    where the links actually lead, so a pin always names a file that is part of the project.
    """
    path = project.root / relative
    resolved = path.resolve()
    if not resolved.is_relative_to(project.root):
        raise ConfigError(
            f"{project.pyproject}: [tool.smallmodel.models] {name}: path = {relative!r} leads "
            f"outside the project through a symbolic link (to {resolved}). A path source must "
            "be a file inside the project: copy the file into it, or declare the model with a "
            "url or hf source."
        )
    return path
