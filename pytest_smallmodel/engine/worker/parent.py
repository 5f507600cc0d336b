"""The engine worker: each loaded model runs in its own process, so a native crash fails one test.

The pytest process keeps a ``WorkerModel`` per loaded model; the model stays loaded in its worker
across tests. Only requests and per-call results cross the boundary (pickled over a pipe), never
llama.cpp's logits. The worker's stdout and stderr go to a log file: llama.cpp's own lines never
reach the terminal, and their tail, with faulthandler's report, explains a crash.

When the worker dies (a signal, the out-of-memory killer, an exit) or a call outlives the
``timeout`` setting, the call raises ``EngineCrash`` with a ``CrashDiagnosis``. The next call
starts a fresh worker; after a second crash every later call fails fast with the diagnosis.

This is the pytest side; ``child`` is the worker's side and imports nothing of this module, and
``protocol`` is what both agree on.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.fingerprint import cpu_facts, decide_repack, model_fingerprint
from pytest_smallmodel.common.results import FinishReason, ScoredStep, Step, Timings
from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.engine.backend import Capabilities, Decoding, Forcing, Loaded, ModelInfo
from pytest_smallmodel.engine.crash import (
    CrashDiagnosis,
    EngineCrash,
    diagnose,
    hints_for,
    signal_name,
    split_log,
)
from pytest_smallmodel.engine.worker.protocol import (
    DIE_WITH_PARENT_ENV,
    WEIGHT_METHODS,
    WorkerStartError,
)

_START_TIMEOUT_FLOOR = 60.0
_LOG_TAIL_BYTES = 64 * 1024


def _oom_kills() -> int | None:
    """The memory cgroup's oom_kill counter (cgroup v2), to tell the OOM killer from a kill -9."""
    try:
        text = Path("/sys/fs/cgroup/memory.events").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


class _Process:
    """One running worker process and its pipes and log file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        package_root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["PYTHONFAULTHANDLER"] = "1"
        # The kernel's parent-death signal follows the spawning *thread*: ask for it only when
        # the main thread spawns, or a worker started from a short-lived thread would be killed.
        is_main = threading.current_thread() is threading.main_thread()
        env[DIE_WITH_PARENT_ENV] = "1" if is_main else "0"
        self.oom_kills_at_start = _oom_kills()
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pytest_smallmodel.engine.worker.child",
                    str(child_read),
                    str(child_write),
                ],
                pass_fds=(child_read, child_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                close_fds=True,
            )
        os.close(child_read)
        os.close(child_write)
        self.outgoing = Connection(parent_write, readable=False)
        self.incoming = Connection(parent_read, writable=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._close_pipes()
        return self.popen.returncode

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.outgoing.send(("close", (), {}))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self.kill()

    def _close_pipes(self) -> None:
        for connection in (self.outgoing, self.incoming):
            with contextlib.suppress(OSError):
                connection.close()

    def oom_killed(self) -> bool:
        now = _oom_kills()
        return (
            now is not None
            and self.oom_kills_at_start is not None
            and now > self.oom_kills_at_start
        )

    def log_text(self) -> str:
        try:
            with self.log_path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - _LOG_TAIL_BYTES))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""


def probe_runtime(*, timeout: float) -> dict[str, Any]:
    """The runtime facts (fingerprint fields) of a fresh worker, which loads no model."""
    fd, log_name = tempfile.mkstemp(prefix="smallmodel-probe-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    process = _Process(log_path)
    try:
        process.outgoing.send(("hello", (), {}))
        if not process.incoming.poll(timeout):
            raise WorkerStartError(f"the engine worker did not answer within {timeout:g} s")
        status, payload = process.incoming.recv()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        returncode = process.kill()
        tail, fault = split_log(process.log_text())
        raise WorkerStartError(
            f"the engine worker ({sys.executable} -m pytest_smallmodel.engine.worker.child) ended "
            f"before it answered ({signal_name(returncode) or f'exit code {returncode}'}):\n"
            + "\n".join([*fault, *tail])
        ) from None
    finally:
        process.close()
        log_path.unlink(missing_ok=True)
    if status != "ok":
        raise payload if isinstance(payload, EngineError) else WorkerStartError(str(payload))
    result: dict[str, Any] = payload
    return result


class WorkerModel(Loaded):
    """The pytest side of one loaded model: same calls as ``LlamaRuntime``, run in a worker."""

    capabilities = Capabilities()

    def __init__(
        self,
        spec: LoadSpec,
        *,
        defer_weights: bool = False,
        runtime: Mapping[str, Any] | None = None,
        on_runtime: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        """``runtime``: the runtime facts an earlier worker reported on this installation (the
        result cache keeps them). With them the worker starts only when a call needs it, so a
        session served entirely from the result cache starts none; without, it starts now.
        ``on_runtime`` receives the facts of each worker that starts."""
        super().__init__(spec)
        self._known_runtime = runtime
        self._on_runtime = on_runtime
        self._info: ModelInfo | None = None
        self._predicted: Mapping[str, Any] | None = None
        self._load_kwargs: dict[str, Any] = {"spec": spec, "defer_weights": defer_weights}
        self._lock = threading.Lock()
        self._process: _Process | None = None
        self._crash: CrashDiagnosis | None = None
        self._runtime: Mapping[str, Any] = {}
        # What the worker would fail on after a start of seconds, as a traceback: say it here.
        spec.settings.threads()
        fd, log_name = tempfile.mkstemp(prefix=f"smallmodel-{spec.name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        if runtime is None:
            try:
                self._start("loading the model")
            except BaseException:
                # Nobody holds this object to close() it: its log would stay in the temp dir.
                self.close()
                raise

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def info(self) -> ModelInfo:
        """What the loaded model reports (starting the worker if it has not started yet)."""
        if self._info is None:
            with self._lock:
                if self._info is None:
                    self._start("loading the model")
        assert self._info is not None
        return self._info

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        if self._info is None and self._known_runtime is not None:
            if self._predicted is None:
                self._predicted = self._predict_fingerprint(self._known_runtime)
            return self._predicted
        return self.info.fingerprint

    def _predict_fingerprint(self, runtime: Mapping[str, Any]) -> Mapping[str, Any]:
        """What the worker's LlamaRuntime computes from the same runtime facts and settings."""
        return model_fingerprint(
            model=self.name,
            sha256=self.sha256,
            numeric_settings=self.settings.numeric(),
            n_threads=self.settings.threads(),
            repack=decide_repack(
                self.settings.repack, runtime["system_info"], runtime["cpu"]["flags"]
            ).enabled,
            runtime=runtime,
        )

    @property
    def n_vocab(self) -> int:
        return self.info.n_vocab

    def _start(self, during: str) -> ModelInfo:
        """Start a worker and load the model in it; returns the loaded model's ``ModelInfo``."""
        started = time.perf_counter()
        self._process = _Process(self.log_path)
        self.stats.worker_starts += 1
        timeout = max(self.settings.timeout, _START_TIMEOUT_FLOOR)
        try:
            self._runtime = self._exchange("hello", (), {}, timeout=timeout, during=during)
            self.stats.worker_start_seconds += time.perf_counter() - started
            if self._on_runtime is not None:
                self._on_runtime(self._runtime)
            info: ModelInfo = self._exchange(
                "load", (), self._load_kwargs, timeout=timeout, during=during
            )
        except EngineError as error:
            if not isinstance(error, EngineCrash) and self._process is not None:
                self._process.close()  # a model that cannot load leaves no idle worker behind
                self._process = None
            raise
        self.stats.load_seconds += time.perf_counter() - started
        if not self._load_kwargs["defer_weights"]:
            self.stats.weights_loaded = True
        self._info = info
        return info

    def close(self) -> None:
        with self._lock:
            if self._process is not None:
                self._process.close()
                self._process = None
            self.log_path.unlink(missing_ok=True)

    # -- calls ----------------------------------------------------------------------------------

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``method`` in the worker; a dead or stuck worker raises ``EngineCrash``."""
        with self._lock:
            if self._crash is not None and self.stats.crashes >= 2:
                self._crash = self._crash.again()
                raise EngineCrash(self._crash)
            if self._process is None:
                first = self._info is None and not self.stats.crashes
                self._start(
                    f"loading the model for {method}"
                    if first
                    else f"restarting the worker before {method}"
                )
            if method in WEIGHT_METHODS:
                self.stats.weights_loaded = True
            return self._exchange(
                method,
                args,
                kwargs,
                timeout=self.settings.timeout if timeout is None else timeout,
                during=method,
            )

    def _exchange(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        timeout: float,
        during: str,
    ) -> Any:
        process = self._process
        assert process is not None
        try:
            process.outgoing.send((method, args, dict(kwargs)))
            if not process.incoming.poll(timeout):
                return self._crashed(process, during, timed_out=timeout)
            status, payload = process.incoming.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return self._crashed(process, during)
        except KeyboardInterrupt:
            # The worker's state is unknown after an interrupted call: never reuse it.
            process.kill()
            self._process = None
            self._crash = None
            raise
        if status == "ok":
            return payload
        if status == "error":
            raise payload
        raise RuntimeError(f"the engine worker of model {self.name} raised:\n{payload}")

    def _crashed(self, process: _Process, during: str, timed_out: float | None = None) -> Any:
        returncode = process.kill()
        self._process = None
        runtime = self._runtime or {}
        repack = self._info.repack if self._info is not None else None
        settings = {**self.settings.numeric(), "timeout": self.settings.timeout}
        if repack is not None:
            settings["repack"] = f"{self.settings.repack} -> {repack.enabled}"
        diagnosis = diagnose(
            model=self.spec.label,
            call=during,
            returncode=returncode,
            timed_out=timed_out,
            settings=settings,
            log=split_log(process.log_text()),
            hints=lambda signal_text, cause: hints_for(
                signal_name=signal_text,
                cause=cause,
                system_info=str(runtime.get("system_info", "")),
                cpu_flags=list((runtime.get("cpu") or cpu_facts()).get("flags", [])),
                repack=repack.enabled if repack is not None else None,
                oom_killed=process.oom_killed(),
            ),
            crash_count=self.stats.crashes + 1,
        )
        self.stats.crashes += 1
        self._crash = diagnosis
        # An exit before the worker ever answered is a start failure (e.g. a Python error).
        if not self._runtime and diagnosis.cause == "exit":
            raise WorkerStartError(
                f"the engine worker for model {self.name} could not start "
                f"({sys.executable} -m pytest_smallmodel.engine.worker.child):\n{diagnosis.text()}"
            )
        raise EngineCrash(diagnosis)

    # -- the runtime's methods ------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        result: list[int] = self.call("tokenize", text, add_bos=add_bos, special=special)
        return result

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self.call("detokenize", list(tokens)))

    def is_end(self, token: int) -> bool:
        return bool(self.call("is_end", token))

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        return str(self.call("render_chat", [dict(m) for m in messages]))

    def decode(
        self, prompt_tokens: Sequence[int], decoding: Decoding, *, timeout: float | None = None
    ) -> tuple[list[Step], FinishReason, Timings]:
        schema = None if decoding.schema is None else dict(decoding.schema)  # to pickle it
        steps, finish, timings = self.call(
            "decode", list(prompt_tokens), replace(decoding, schema=schema), timeout=timeout
        )
        self.stats.count_decode(timings)
        return steps, finish, timings

    def score(
        self, prompt_tokens: Sequence[int], forcing: Forcing, *, timeout: float | None = None
    ) -> list[ScoredStep]:
        """Teacher forcing on the incremental path (``LlamaRuntime.score``)."""
        return self._teacher_force("score", prompt_tokens, forcing, timeout)

    def verify(
        self, prompt_tokens: Sequence[int], forcing: Forcing, *, timeout: float | None = None
    ) -> list[ScoredStep]:
        """Teacher forcing in one batched pass (``LlamaRuntime.verify``, tolerance mode only)."""
        return self._teacher_force("verify", prompt_tokens, forcing, timeout)

    def _teacher_force(
        self, method: str, prompt_tokens: Sequence[int], forcing: Forcing, timeout: float | None
    ) -> list[ScoredStep]:
        schema = None if forcing.schema is None else dict(forcing.schema)  # to pickle it
        scored: list[ScoredStep] = self.call(
            method, list(prompt_tokens), replace(forcing, schema=schema), timeout=timeout
        )
        return scored

    def label_logprob(
        self, prompt_tokens: Sequence[int], label: Sequence[int], timeout: float | None = None
    ) -> float:
        """From a fresh context (``LlamaRuntime.continuation_logprob``): what ``label_logprobs``
        gives from a saved copy of the prompt's state, bit for bit."""
        return float(
            self.call("continuation_logprob", list(prompt_tokens), list(label), timeout=timeout)
        )

    def label_logprobs(
        self,
        prompt_tokens: Sequence[int],
        continuations: Sequence[Sequence[int]],
        *,
        timeout: float | None = None,
    ) -> list[float]:
        result: list[float] = self.call(
            "label_logprobs",
            list(prompt_tokens),
            [list(c) for c in continuations],
            timeout=timeout,
        )
        return result

    def weights_loaded(self) -> bool:
        """Whether the worker has loaded the weights (false while only the vocabulary is)."""
        return bool(self.call("weights_loaded"))

    def embed(self, text: str, *, timeout: float | None = None) -> list[float]:
        result: list[float] = self.call("embed", text, timeout=timeout)
        return result
