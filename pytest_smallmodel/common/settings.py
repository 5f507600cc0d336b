"""Engine settings: every knob that can change tokens is explicit, never a machine default.

Settings merge in three layers, later wins: ``[tool.smallmodel.settings]`` in pyproject.toml,
the model's own ``settings = {...}`` in its spec, and keyword arguments on the marker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.errors import ConfigError

# llama.cpp KV cache element types that llama-cpp-python accepts by name (GGML_TYPE_* ids).
KV_CACHE_TYPES: Mapping[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "bf16": 30,
}


# llama.cpp pooling of token embeddings into one vector; "model" keeps the GGUF's own choice.
POOLING_TYPES: Mapping[str, int] = {"model": -1, "none": 0, "mean": 1, "cls": 2, "last": 3}


@dataclass(frozen=True)
class EngineSettings:
    """Load and decode settings. Defaults are fixed values, never derived from the machine,
    except ``n_threads`` which measurably does not change the numbers (docs/determinism.md).

    ``repack`` and ``timeout`` are not part of a request: the effective ``repack`` is a runtime
    fact recorded in the fingerprint (changing it is drift judged in tolerance mode), and
    ``timeout`` only bounds how long a call may run.
    """

    n_ctx: int = 2048
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attn: bool = False
    type_k: str = "f16"
    type_v: str = "f16"
    n_gpu_layers: int = 0
    seed: int = 0
    top_logprobs: int = 5
    n_threads: int | None = None
    pooling: str = "model"
    swa_full: bool = True
    repack: str | bool = "auto"
    timeout: float = 600.0

    def numeric(self) -> dict[str, Any]:
        """The settings that can change tokens: recorded in requests, goldens and cache keys.

        ``pooling`` only shapes embeddings, so only embedding requests record it.
        """
        values = asdict(self)
        del values["n_threads"]
        del values["top_logprobs"]
        del values["pooling"]
        del values["repack"]
        del values["timeout"]
        return values

    def load_key(self) -> tuple[Any, ...]:
        """What a loaded ``Llama`` object depends on: models are shared per (sha256, load_key)."""
        values = asdict(self)
        del values["top_logprobs"]
        del values["timeout"]
        return tuple(sorted(values.items()))

    def threads(self) -> int:
        return self.n_threads if self.n_threads is not None else default_threads()


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(EngineSettings))


@dataclass(frozen=True)
class LoadSpec:
    """Which verified file a backend loads and how: what every backend, the pool and the worker
    take, in one value instead of six arguments."""

    name: str
    path: Path
    sha256: str
    settings: EngineSettings
    embedding: bool = False
    chat_template: str | None = None  # the template text named in the model's spec; None: GGUF's

    @property
    def label(self) -> str:
        """``name@sha256-prefix``, as messages name a model."""
        return f"{self.name}@{self.sha256[:8]}"

    def load_key(self) -> tuple[Any, ...]:
        """What a loaded model depends on: the pool shares one per key (not the name or path:
        the same file under two names is loaded once)."""
        return (self.sha256, self.settings.load_key(), self.embedding, self.chat_template)


def default_threads() -> int:
    """Cores available to this process, divided among pytest-xdist workers (at least one).

    llama.cpp's thread pool degrades badly when oversubscribed, so N workers share the cores.
    ``SMALLMODEL_THREADS`` overrides it.
    """
    override = os.environ.get("SMALLMODEL_THREADS")
    if override:
        try:
            value = int(override)
        except ValueError:
            raise ConfigError(
                f"SMALLMODEL_THREADS={override!r} is not an integer: set it to a thread count"
            ) from None
        if value < 1:
            raise ConfigError(f"SMALLMODEL_THREADS={value} must be at least 1")
        return value
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    return max(1, cores // max(1, workers))


def _check_value(name: str, value: Any, where: str) -> Any:
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{where}: setting {name!r} = {value!r} is invalid: expected {expected}")

    if name == "repack":
        if not (value == "auto" or isinstance(value, bool)):
            raise fail('"auto", true or false')
        return value
    if name == "timeout":
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise fail("a number of seconds > 0")
        return float(value)
    if name in ("flash_attn", "swa_full"):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if name == "pooling":
        if value not in POOLING_TYPES:
            raise fail("one of " + ", ".join(POOLING_TYPES))
        return value
    if name in ("type_k", "type_v"):
        if value not in KV_CACHE_TYPES:
            raise fail("one of " + ", ".join(KV_CACHE_TYPES))
        return value
    if name == "n_threads":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise fail("a positive integer")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail("an integer")
    minimum = {"n_ctx": 16, "n_batch": 1, "n_ubatch": 1, "top_logprobs": 1}.get(name, 0)
    if name == "n_gpu_layers" and value == -1:
        return value
    if value < minimum:
        raise fail(f"an integer >= {minimum}")
    return value


def merge_settings(*layers: tuple[str, Mapping[str, Any]]) -> EngineSettings:
    """Apply ``(where, overrides)`` layers in order; ``where`` names the source in errors."""
    settings = EngineSettings()
    for where, overrides in layers:
        unknown = sorted(set(overrides) - set(SETTING_NAMES))
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting(s) {', '.join(unknown)}; "
                f"valid settings are: {', '.join(SETTING_NAMES)}"
            )
        checked = {name: _check_value(name, value, where) for name, value in overrides.items()}
        settings = replace(settings, **checked)
    if settings.n_batch > settings.n_ctx:
        settings = replace(settings, n_batch=settings.n_ctx)
    if settings.n_ubatch > settings.n_batch:
        settings = replace(settings, n_ubatch=settings.n_batch)
    return settings
