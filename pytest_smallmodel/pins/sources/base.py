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
from typing import TYPE_CHECKING, Any, ClassVar

# The interface names these; what the kinds share that needs them at run time lives with them:
# ``hashing.verify_pin``, ``hashing.hash_local``, ``hashing.downloaded_mismatch``,
# ``lockfile.make_pin``. So a kind's module stands one floor above them, not two.
if TYPE_CHECKING:
    from pathlib import Path

    from pytest_smallmodel.pins.hashing import Verification
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


def quiet_tqdm_class() -> type[Any]:
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()
