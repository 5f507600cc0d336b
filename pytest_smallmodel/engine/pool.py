"""The loaded models of this process (``ModelPool``), each opened by the ``Backend`` its spec's
``backend``/``server``/``api`` names (one entry each in ``_OPENERS``).

docs/backends.md describes the backends; each lives in its own module and implements
``backend.Backend``. Importing a backend's module is deferred until a spec asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.engine.backend import Backend
from pytest_smallmodel.pins.project import Serving


@dataclass(frozen=True)
class WorkerOptions:
    """What only the engine worker takes: a server loads its weights when it starts and
    reports its own runtime, so these do not apply to it."""

    defer_weights: bool
    runtime: Mapping[str, Any] | None
    on_runtime: Callable[[Mapping[str, Any]], None] | None


# An opener gets the spec's serving, the model every backend takes, and the worker's own options.
Opener = Callable[[Serving, LoadSpec, WorkerOptions], Backend]


def _worker(serving: Serving, spec: LoadSpec, options: WorkerOptions) -> Backend:
    from pytest_smallmodel.engine.worker.parent import WorkerModel

    return WorkerModel(
        spec,
        defer_weights=options.defer_weights,
        runtime=options.runtime,
        on_runtime=options.on_runtime,
    )


def _llama_server(serving: Serving, spec: LoadSpec, options: WorkerOptions) -> Backend:
    from pytest_smallmodel.engine.served.llama_backend import LlamaServerModel

    return LlamaServerModel(spec, server=serving.server)


def _openai(serving: Serving, spec: LoadSpec, options: WorkerOptions) -> Backend:
    from pytest_smallmodel.engine.served.openai_backend import OpenAIModel

    assert serving.server is not None  # project.py: api needs server
    return OpenAIModel(spec, server=serving.server)


_OPENERS: dict[tuple[str, str], Opener] = {
    ("llama-cpp-python", "llama-server"): _worker,
    ("llama-server", "llama-server"): _llama_server,
    ("llama-server", "openai"): _openai,
}


def open_backend(
    serving: Serving,
    spec: LoadSpec,
    *,
    defer_weights: bool,
    runtime: Mapping[str, Any] | None = None,
    on_runtime: Callable[[Mapping[str, Any]], None] | None = None,
) -> Backend:
    """Start the backend ``serving`` names for one verified model file and its settings."""
    options = WorkerOptions(defer_weights, runtime, on_runtime)
    return _OPENERS[(serving.backend, serving.api)](serving, spec, options)


@dataclass
class ModelPool:
    """This process's loaded models, one per (sha256, load settings, embedding, template)."""

    _models: dict[tuple[Any, ...], Backend] = field(default_factory=dict)

    def get(
        self,
        spec: LoadSpec,
        *,
        defer_weights: bool = False,
        serving: Serving | None = None,
        runtime: Mapping[str, Any] | None = None,
        on_runtime: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> Backend:
        """The loaded model for ``spec`` (``runtime``, ``on_runtime``: see ``WorkerModel``;
        the result cache passes them so that cached reruns start no worker)."""
        serving = serving or Serving()
        key = (*spec.load_key(), serving)
        model = self._models.get(key)
        if model is None:
            model = open_backend(
                serving,
                spec,
                defer_weights=defer_weights,
                runtime=runtime,
                on_runtime=on_runtime,
            )
            self._models[key] = model
        return model

    def release(self, spec: LoadSpec, *, serving: Serving | None = None) -> None:
        """Closes and forgets the model ``get`` opened for ``spec``, if any (a replay done with
        one load frees it before the next starts)."""
        model = self._models.pop((*spec.load_key(), serving or Serving()), None)
        if model is not None:
            model.close()

    def __iter__(self) -> Iterator[Backend]:
        return iter(list(self._models.values()))

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()
