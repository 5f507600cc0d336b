"""From a reference like ``"smollm2@b179c952"`` to a verified, loaded model handle.

This is the core the pytest plugin drives: it checks references against models.lock, verifies
each file once per process before llama.cpp ever sees it, merges settings and shares loaded
models. It knows nothing of pytest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.errors import (
    ConfigError,
    LockError,
    SmallModelError,
)
from pytest_smallmodel.common.settings import EngineSettings, LoadSpec, merge_settings
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.engine.result_cache import ResultCache
from pytest_smallmodel.pins.chat_template import load_template
from pytest_smallmodel.pins.hashing import ModelUnavailable
from pytest_smallmodel.pins.lockfile import Lock, LockedModel, read_lock
from pytest_smallmodel.pins.project import Project
from pytest_smallmodel.pins.sources import pin_staleness, verify_model

if TYPE_CHECKING:  # the plugin builds it (drift/batched.py)
    from pytest_smallmodel.drift.batched import GoldenSource

_REFERENCE_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]*)(?:@(?P<prefix>[0-9a-f]+))?$")
MIN_PREFIX = 7


@dataclass(frozen=True)
class ModelReference:
    name: str
    sha_prefix: str | None

    @classmethod
    def parse(cls, text: object) -> ModelReference:
        if not isinstance(text, str):
            raise ConfigError(
                "a model reference must be a string like 'smollm2' or 'smollm2@b179c95', "
                f"got {text!r}"
            )
        match = _REFERENCE_RE.match(text)
        if not match:
            raise ConfigError(
                f"invalid model reference {text!r}: write NAME or NAME@SHA256PREFIX "
                f"(lowercase name, at least {MIN_PREFIX} lowercase hex characters)"
            )
        prefix = match["prefix"]
        if prefix is not None and len(prefix) < MIN_PREFIX:
            raise ConfigError(
                f"model reference {text!r}: the sha256 prefix needs at least {MIN_PREFIX} hex "
                f"characters, got {len(prefix)}"
            )
        return cls(match["name"], prefix)

    def __str__(self) -> str:
        return self.name if self.sha_prefix is None else f"{self.name}@{self.sha_prefix}"


class ModelRegistry:
    """Per-process model state: the lock, verification results and the pool of loaded models."""

    def __init__(self, project: Project, *, result_cache: ResultCache | None = None) -> None:
        self.project = project
        self.result_cache = result_cache
        self.pool = ModelPool()
        self._lock: Lock | None = None
        self._verified: dict[str, Path | SmallModelError] = {}
        self.used: dict[str, LockedModel] = {}

    @property
    def lock(self) -> Lock:
        if self._lock is None:
            if not self.project.lock_path.exists():
                raise LockError(
                    f"{self.project.lock_path} does not exist: run `smallmodel lock` to pin the "
                    "models declared in [tool.smallmodel.models]"
                )
            self._lock = read_lock(
                self.project.lock_path, validated_dir=self.project.cache_dir / "validated"
            )
        return self._lock

    def resolve(self, reference: ModelReference) -> LockedModel:
        models = self.lock.models
        locked = models.get(reference.name)
        if locked is None:
            declared = reference.name in self.project.models
            hint = (
                f"it is declared in {self.project.pyproject.name} but not locked: run "
                f"`smallmodel lock {reference.name}`"
                if declared
                else "declare it in [tool.smallmodel.models] and run `smallmodel lock`"
            )
            known = ", ".join(sorted(models)) or "(none)"
            raise ConfigError(
                f"unknown model {reference.name!r}: {hint}. Models in "
                f"{self.project.lock_path.name}: {known}"
            )
        # The check `smallmodel lock --check` makes: a pin made from another declaration would
        # load a file the project no longer names.
        stale = pin_staleness(self.project, self.project.models.get(reference.name), locked)
        if stale is not None:
            raise LockError(
                f"{self.project.lock_path} is stale for model {reference.name!r}: {stale}. Run "
                f"`smallmodel lock` in {self.project.root} and commit models.lock"
            )
        if reference.sha_prefix is not None and not locked.sha256.startswith(reference.sha_prefix):
            raise ConfigError(
                f"model reference {reference} does not match {self.project.lock_path.name}, which "
                f"pins {locked.name}@{locked.sha256[: max(8, len(reference.sha_prefix))]} "
                f"(sha256 {locked.sha256}). Either update the marker to "
                f"'{locked.name}@{locked.sha256[:8]}', or restore the lock to the file the "
                "marker names (git checkout models.lock / `smallmodel lock`)"
            )
        return locked

    def verified_path(self, locked: LockedModel) -> Path:
        """The verified local file; raises the same error (mismatch, missing, unreadable) for
        every later caller."""
        outcome = self._verified.get(locked.name)
        if outcome is None:
            try:
                verification = verify_model(self.project, locked)
            except SmallModelError as error:  # unreadable file, a directory, a link out
                outcome = error
            else:
                if verification.status == "verified" and verification.path is not None:
                    outcome = verification.path
                else:
                    outcome = ModelUnavailable(verification)
            self._verified[locked.name] = outcome
        if isinstance(outcome, SmallModelError):
            raise outcome
        return outcome

    def settings_for(self, name: str, overrides: Mapping[str, Any], where: str) -> EngineSettings:
        spec = self.project.models.get(name)
        layers: list[tuple[str, Mapping[str, Any]]] = [
            (f"{self.project.pyproject} [tool.smallmodel.settings]", self.project.settings)
        ]
        if spec is not None:
            layers.append(
                (
                    f"{self.project.pyproject} [tool.smallmodel.models.{name}] settings",
                    spec.settings,
                )
            )
        layers.append((where, overrides))
        return merge_settings(*layers)

    def handle(
        self,
        reference: ModelReference,
        overrides: Mapping[str, Any],
        *,
        where: str,
        goldens: GoldenSource | None = None,
    ) -> ModelHandle:
        """The handle of a verified, loaded model; ``goldens``: the running test's, checked with
        one batched pass in tolerance mode (``--smallmodel-verify=batched``)."""
        locked = self.resolve(reference)
        settings = self.settings_for(locked.name, overrides, where)
        path = self.verified_path(locked)
        spec = self.project.models.get(locked.name)
        cache = self.result_cache
        load = LoadSpec(
            name=locked.name,
            path=path,
            sha256=locked.sha256,
            settings=settings,
            embedding=bool(spec and spec.embedding),
            chat_template=load_template(self.project, locked.name, locked.chat_template_file),
        )
        loaded = self.pool.get(
            load,
            # Results served from the cache need no weights, and with the runtime facts of an
            # earlier worker on this installation no worker at all: it starts on the first miss.
            defer_weights=cache is not None,
            runtime=cache.known_runtime() if cache is not None else None,
            on_runtime=cache.remember_runtime if cache is not None else None,
            serving=spec.serving if spec is not None else None,
        )
        self.used[locked.name] = locked
        return ModelHandle(loaded, settings, self.result_cache, goldens=goldens)

    def base_spec(self, name: str) -> LoadSpec:
        """The verified file of locked model ``name`` with default settings: what replays
        under other settings start from (``engine/variants.py``)."""
        locked = self.resolve(ModelReference(name, None))
        path = self.verified_path(locked)
        spec = self.project.models.get(name)
        return LoadSpec(
            name=locked.name,
            path=path,
            sha256=locked.sha256,
            settings=EngineSettings(),
            embedding=bool(spec and spec.embedding),
            chat_template=load_template(self.project, locked.name, locked.chat_template_file),
        )

    def close(self) -> None:
        self.pool.close()
