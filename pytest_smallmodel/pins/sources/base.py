"""The interface every kind of model source implements, and what the kinds share.

A kind (``hf``, ``url``, ``path``, ``package``) owns what it does with a spec and a pin: how a
spec is resolved into a pin, where a pinned file lies on this machine, how a missing one is
fetched, what to do when it does not match. Its grammar (the keys a spec declares and a pin adds,
their checks, the one-line description) is its ``SourceSpec`` in ``pins.source_specs``, which
the spec and pin classes read without importing the operations. Everything that is the same for
all kinds (freshness of a pin, verification, pulling) is written once in
``pytest_smallmodel.pins.sources`` over this interface. Adding a kind is one module plus one entry
in ``KINDS`` there, its ``SourceSpec``, and its part of ``lock.schema.json``.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from pytest_smallmodel.pins.gguf_info import GGUFFacts, read_facts
from pytest_smallmodel.pins.hashing import StatCache, Verification, hash_with_cache, verify_file
from pytest_smallmodel.pins.lockfile import LockedModel
from pytest_smallmodel.pins.project import ModelSpec, Project
from pytest_smallmodel.pins.source_specs import SourceSpec

# Seconds without progress before a network call is abandoned; tests lower it.
HTTP_TIMEOUT_S = 30.0
USER_AGENT = "pytest-smallmodel"


class Source(ABC):
    """One kind of model source; a stateless singleton registered in ``sources.KINDS``."""

    # The kind's grammar (keys, checks, description), which the spec and pin classes read.
    spec: ClassVar[SourceSpec]

    @property
    def kind(self) -> str:
        """The spec key that selects this kind, e.g. "hf"."""
        return self.spec.kind

    @abstractmethod
    def resolve(self, project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
        """The spec's pin: moving parts resolved, sha256, size and GGUF facts (no template)."""

    @abstractmethod
    def candidate_path(self, project: Project, locked: LockedModel) -> Path | None:
        """Where the pinned file would be on this machine (it may not exist); never network."""

    def expected_path(self, project: Project, locked: LockedModel) -> Path | None:
        """The path to report for a missing file when ``candidate_path`` has none."""
        return None

    def missing_fix(self, locked: LockedModel) -> str | None:
        """What to do when the pinned file is absent; None for the generic `smallmodel pull`."""
        return None

    def mismatch_fix(self, locked: LockedModel) -> str | None:
        """What to do when the local file differs from the pin; None for the generic advice."""
        return None

    def fetch(
        self, project: Project, locked: LockedModel, current: Verification, *, progress: bool
    ) -> Verification:
        """Download the pinned file that ``current`` found missing or wrong, and verify it.

        Local kinds have nothing to download: the verification already says what to do.
        """
        return current

    def local_path(self, project: Project, locked: LockedModel) -> Path | None:
        """Where the pinned file is on this machine, or None when it is not present."""
        candidate = self.candidate_path(project, locked)
        return candidate if candidate is not None and candidate.is_file() else None

    def verify(
        self, project: Project, locked: LockedModel, *, full: bool = False, progress: bool = False
    ) -> Verification:
        """Check the local file against its pin, using the stat cache unless ``full``."""
        path = self.local_path(project, locked) or self.expected_path(project, locked)
        return verify_file(
            locked.name,
            path,
            locked.sha256,
            project.cache_dir,
            full=full,
            progress=progress,
            missing_fix=self.missing_fix(locked),
            mismatch_fix=self.mismatch_fix(locked),
        )


def make_pin(
    name: str, sha256: str, size: int, source: Mapping[str, str], facts: GGUFFacts
) -> LockedModel:
    return LockedModel(
        name=name,
        sha256=sha256,
        size=size,
        source=MappingProxyType(dict(source)),
        architecture=facts.architecture,
        file_type=facts.file_type,
        context_length=facts.context_length,
        chat_template_sha256=facts.chat_template_sha256,
    )


def hash_local(project: Project, path: Path, progress: bool) -> tuple[str, int, GGUFFacts]:
    """sha256 (stat cache), size and GGUF facts of a file on this machine."""
    facts = read_facts(path)
    sha256 = hash_with_cache(path, StatCache(project.cache_dir), progress=progress)
    return sha256, path.stat().st_size, facts


def downloaded_mismatch(result: Verification) -> Verification:
    """A fresh download that does not match its pin (it was deleted): the source changed."""
    fix = (
        "The downloaded file did not match the pin and was deleted. The source now serves "
        f"different bytes: if that is intended, run `smallmodel lock --upgrade {result.name}` "
        "and commit models.lock; otherwise retry later or check the source."
    )
    return Verification(result.name, result.path, "mismatch", result.expected, result.actual, fix)


def quiet_tqdm_class() -> type[Any]:
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()
