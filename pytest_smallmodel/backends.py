"""Which ``Backend`` runs a model, from its spec's ``backend``/``server``/``api`` (one entry each).

docs/backends.md describes the backends; each lives in its own module and implements
``backend.Backend``. Importing a backend's module is deferred until a spec asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytest_smallmodel.backend import Backend
from pytest_smallmodel.project import Serving
from pytest_smallmodel.settings import EngineSettings

Opener = Callable[..., Backend]


def _worker(serving: Serving, **kwargs: object) -> Backend:
    from pytest_smallmodel.worker import WorkerModel

    return WorkerModel(**kwargs)  # type: ignore[arg-type]


def _llama_server(serving: Serving, **kwargs: object) -> Backend:
    from pytest_smallmodel.server_backend import LlamaServerModel

    # A server loads its weights when it starts, and its fingerprint comes from it.
    for worker_only in ("defer_weights", "runtime", "on_runtime"):
        kwargs.pop(worker_only, None)
    return LlamaServerModel(server=serving.server, **kwargs)  # type: ignore[arg-type]


def _openai(serving: Serving, **kwargs: object) -> Backend:
    from pytest_smallmodel.openai_backend import OpenAIModel

    for worker_only in ("defer_weights", "runtime", "on_runtime"):
        kwargs.pop(worker_only, None)
    assert serving.server is not None  # project.py: api needs server
    return OpenAIModel(server=serving.server, **kwargs)  # type: ignore[arg-type]


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
    opener = _OPENERS[(serving.backend, serving.api)]
    return opener(
        serving,
        name=name,
        path=path,
        sha256=sha256,
        settings=settings,
        embedding=embedding,
        chat_template=chat_template,
        defer_weights=defer_weights,
        runtime=runtime,
        on_runtime=on_runtime,
    )
