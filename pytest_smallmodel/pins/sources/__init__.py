"""Model sources: resolve a spec to a pin, find a pinned file locally, download and verify it.

One module per kind of source (``hf``, ``url``, ``path``, ``package``), each a
``base.Source`` registered in ``KINDS`` below. What is the same for every kind is here: whether
a pin is fresh, resolving with the chat template, verifying and pulling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from pytest_smallmodel.pins.chat_template import pin_template, template_change
from pytest_smallmodel.pins.hashing import Verification, verify_pin
from pytest_smallmodel.pins.lockfile import LockedModel
from pytest_smallmodel.pins.project import ModelSpec, Project
from pytest_smallmodel.pins.sources.base import Source
from pytest_smallmodel.pins.sources.hf import HuggingFaceSource
from pytest_smallmodel.pins.sources.package import PackageSource
from pytest_smallmodel.pins.sources.path import PathSource
from pytest_smallmodel.pins.sources.url import UrlSource

__all__ = [
    "KINDS",
    "Source",
    "is_pin_fresh",
    "local_path",
    "pin_staleness",
    "pull_model",
    "resolve_model",
    "source_of",
    "verify_model",
]

# Every kind of source, by the spec key that selects it; the order of messages listing them.
KINDS: Mapping[str, Source] = MappingProxyType(
    {
        source.kind: source
        for source in (HuggingFaceSource(), UrlSource(), PathSource(), PackageSource())
    }
)


def source_of(kind: str) -> Source:
    return KINDS[kind]


# --------------------------------------------------------------------------------------------
# Pins


def is_pin_fresh(spec: ModelSpec, locked: LockedModel) -> bool:
    """True when the pin was made from this exact declared source (settings do not matter)."""
    return locked.kind == spec.kind and locked.declared_source() == spec.normalized_source()


def pin_staleness(
    project: Project, spec: ModelSpec | None, locked: LockedModel | None
) -> str | None:
    """Why models.lock does not match the declaration of one model, or None when it does.

    The same words for ``smallmodel lock --check`` and for pytest refusing a stale pin; a chat
    template file named by the spec is part of the pin.
    """
    if spec is None:
        return None if locked is None else "locked but no longer declared"
    if locked is None:
        return "declared but not locked"
    if not is_pin_fresh(spec, locked):
        return (
            f"spec changed (locked {_format_source(locked.declared_source())}, "
            f"declared {_format_source(spec.normalized_source())})"
        )
    return template_change(project, spec, locked.chat_template_file)


def _format_source(source: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key} = {value!r}" for key, value in source.items()) + "}"


def resolve_model(project: Project, spec: ModelSpec, *, progress: bool = False) -> LockedModel:
    """Resolve a spec's moving parts and compute its pin (network for hf and url)."""
    template = pin_template(project, spec)  # a bad template path fails before any download
    pin = source_of(spec.kind).resolve(project, spec, progress=progress)
    return dataclasses.replace(pin, chat_template_file=template)


# --------------------------------------------------------------------------------------------
# Local paths and verification (never network), pull


def local_path(project: Project, locked: LockedModel) -> Path | None:
    """Where the pinned file is on this machine, or None when it is not present."""
    return source_of(locked.kind).local_path(project, locked)


def verify_model(
    project: Project, locked: LockedModel, *, full: bool = False, progress: bool = False
) -> Verification:
    """Check the local file against its pin, using the stat cache unless ``full``."""
    return verify_pin(source_of(locked.kind), project, locked, full=full, progress=progress)


def pull_model(project: Project, locked: LockedModel, *, progress: bool = False) -> Verification:
    """Make the pinned file present and verified; a download that fails verification is deleted.

    Returns the final verification (mismatch/missing when the file could not be made right);
    raises SourceError when the source cannot be reached.
    """
    source = source_of(locked.kind)
    current = verify_pin(source, project, locked, progress=progress)
    if current.ok:
        return current
    return source.fetch(project, locked, current, progress=progress)
