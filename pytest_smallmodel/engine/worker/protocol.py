"""What both ends of the engine worker's pipe agree on: the methods the pytest side may call,
the error that crosses it when the worker cannot start, and how a child process asks to die with
the pytest process.

Requests are ``(method, args, kwargs)`` tuples, answers ``("ok", result)``, ``("error",
EngineError)`` or ``("bug", traceback text)``, all pickled over a pipe (``parent`` sends,
``child`` answers). This module imports nothing of either side.
"""

from __future__ import annotations

import contextlib
import signal

from pytest_smallmodel.common.errors import EngineError

# Methods of LlamaRuntime the pytest side may call; anything else is a protocol error.
METHODS = frozenset(
    {
        "tokenize",
        "detokenize",
        "piece",
        "is_end",
        "render_chat",
        "decode",
        "score",
        "verify",
        "continuation_logprob",
        "label_logprobs",
        "embed",
        "weights_loaded",
    }
)
# The calls that need the weights; the others work on a vocabulary-only load (defer_weights).
WEIGHT_METHODS = frozenset(
    {"decode", "score", "verify", "continuation_logprob", "label_logprobs", "embed"}
)
# Set by the parent when the spawning thread is the main thread (see ``parent._Process``).
DIE_WITH_PARENT_ENV = "SMALLMODEL_WORKER_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


class WorkerStartError(EngineError):
    """The worker process could not start (llama_cpp missing, import error, bad interpreter)."""


def die_with_parent() -> None:
    """Linux: the kernel kills this process (a worker, a managed llama-server, run as its
    ``preexec_fn``) when the pytest process dies, even mid-decode."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
