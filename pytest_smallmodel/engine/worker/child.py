"""The engine worker's side of the pipe: load one model in ``runtime.LlamaRuntime`` and answer.

Run as ``python -m pytest_smallmodel.engine.worker.child READ_FD WRITE_FD`` (``parent`` does
this). It imports ``protocol`` and the runtime, nothing of the pytest side, so a worker loads no
more than it runs.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.engine.worker.protocol import (
    DIE_WITH_PARENT_ENV,
    METHODS,
    WorkerStartError,
    die_with_parent,
)


def serve(incoming: Connection, outgoing: Connection) -> None:
    """Answer requests until the pytest side closes the pipe or sends ``close``."""
    # Ctrl-C reaches the whole process group; the pytest side decides what happens to a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        die_with_parent()
    faulthandler.enable(file=sys.stderr, all_threads=True)
    runtime: Any = None
    while True:
        try:
            method, args, kwargs = incoming.recv()
        except EOFError:
            break
        if method == "close":
            break
        try:
            if method == "hello":
                result: Any = _hello()
            elif method == "load":
                from pytest_smallmodel.engine.worker.runtime import LlamaRuntime

                runtime = LlamaRuntime(**kwargs)
                result = runtime.info
            elif method == "weights_loaded" and runtime is not None:
                result = runtime.weights_loaded  # a property: answering it loads nothing
            elif method in METHODS and runtime is not None:
                result = getattr(runtime, method)(*args, **kwargs)
            else:
                raise EngineError(f"engine worker: unknown request {method!r}")
        except EngineError as error:
            outgoing.send(("error", error))
        except Exception:
            outgoing.send(("bug", traceback.format_exc()))
        else:
            outgoing.send(("ok", result))
        sys.stderr.flush()
    if runtime is not None:
        runtime.close()


def _hello() -> dict[str, Any]:
    """The runtime facts of this process (import errors surface here, as a clear message)."""
    try:
        from pytest_smallmodel.common.fingerprint import runtime_fingerprint
    except ImportError as error:  # pragma: no cover - the package imports nothing optional
        raise EngineError(f"engine worker: {error}") from None
    try:
        import llama_cpp  # noqa: F401
    except ImportError as error:
        raise WorkerStartError(
            f"the engine worker cannot import llama_cpp ({error}) with {sys.executable}: "
            "install llama-cpp-python in this environment (pip install llama-cpp-python)"
        ) from None
    return dict(runtime_fingerprint())


def main(argv: Sequence[str]) -> int:
    read_fd, write_fd = (int(x) for x in argv[:2])
    serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
