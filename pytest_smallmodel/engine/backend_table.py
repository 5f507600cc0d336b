"""Which ``Backend`` runs a model, from its spec's ``backend``/``server``/``api`` (one entry each).

docs/backends.md describes the backends; each lives in its own module and implements
``backend.Backend``. Importing a backend's module is deferred until a spec asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_smallmodel.engine.backend import Backend
from pytest_smallmodel.pins.project import Serving
from pytest_smallmodel.common.settings import EngineSettings


@dataclass(frozen=True)
class WorkerOptions:
    """What only the engine worker takes: a server loads its weights when it starts and
    reports its own runtime, so these do not apply to it."""

    defer_weights: bool
    runtime: Mapping[str, Any] | None
    on_runtime: Callable[[Mapping[str, Any]], None] | None


# An opener gets the spec's serving, the arguments every backend takes, and the worker's own.
Opener = Callable[[Serving, Mapping[str, Any], WorkerOptions], Backend]


def _worker(serving: Serving, model: Mapping[str, Any], options: WorkerOptions) -> Backend:
    from pytest_smallmodel.engine.worker.parent import WorkerModel

    return WorkerModel(
        **model,
        defer_weights=options.defer_weights,
        runtime=options.runtime,
        on_runtime=options.on_runtime,
    )


def _llama_server(serving: Serving, model: Mapping[str, Any], options: WorkerOptions) -> Backend:
    from pytest_smallmodel.engine.served.llama_backend import LlamaServerModel

    return LlamaServerModel(server=serving.server, **model)


def _openai(serving: Serving, model: Mapping[str, Any], options: WorkerOptions) -> Backend:
    from pytest_smallmodel.engine.served.openai_backend import OpenAIModel

    assert serving.server is not None  # project.py: api needs server
    return OpenAIModel(server=serving.server, **model)


_OPENERS: dict[tuple[str, str], Opener] = {
    ("llama-cpp-python", "llama-server"): _worker,
    ("llama-server", "llama-server"): _llama_server,
    ("llama-server", "openai"): _openai,
}


def open_backend(
    serving: Serving,
    *,
    name: str,
    path: Path,
    sha256: str,
    settings: EngineSettings,
    embedding: bool,
    chat_template: str | None,
    defer_weights: bool,
    runtime: Mapping[str, Any] | None = None,
    on_runtime: Callable[[Mapping[str, Any]], None] | None = None,
) -> Backend:
    """Start the backend ``serving`` names for one verified model file and its settings."""
    model = {
        "name": name,
        "path": path,
        "sha256": sha256,
        "settings": settings,
        "embedding": embedding,
        "chat_template": chat_template,
    }
    options = WorkerOptions(defer_weights, runtime, on_runtime)
    return _OPENERS[(serving.backend, serving.api)](serving, model, options)
