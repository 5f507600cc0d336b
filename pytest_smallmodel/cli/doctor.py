"""``smallmodel doctor``: does this machine's llama.cpp run the locked models, and how fast?

Everything that runs llama.cpp runs in engine worker processes, so a runtime that crashes on
this CPU (llama.cpp's AMX kernels, a wheel built for another CPU) is reported, not fatal. The
report is data (``DoctorReport``); ``render_text`` and ``to_dict`` are its two presentations.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pytest_smallmodel.common.errors import EngineError, SmallModelError
from pytest_smallmodel.common.fingerprint import decide_repack
from pytest_smallmodel.common.results import RepackDecision
from pytest_smallmodel.common.settings import LoadSpec, default_threads
from pytest_smallmodel.engine.backend import Backend, Decoding
from pytest_smallmodel.engine.crash import EngineCrash, missing_cpu_features
from pytest_smallmodel.engine.pool import open_backend
from pytest_smallmodel.engine.worker.parent import probe_runtime
from pytest_smallmodel.pins.hashing import ModelUnavailable
from pytest_smallmodel.pins.project import Serving

if TYPE_CHECKING:
    from pytest_smallmodel.engine.registry import ModelRegistry

PROBE_PROMPT = "The capital of France is"
PROBE_TOKENS = 8
CheckStatus = Literal["ok", "crashed", "failed", "not present"]


@dataclass(frozen=True)
class ModelCheck:
    name: str
    short_sha: str
    status: CheckStatus
    message: str = ""
    load_seconds: float | None = None
    tokens_per_second: float | None = None
    output: str | None = None
    diagnosis: Mapping[str, Any] | None = None
    engine: str = "llama-cpp-python"  # or "llama-server", "llama-server at URL (api openai)"


@dataclass(frozen=True)
class DoctorReport:
    runtime: Mapping[str, Any]
    threads: int
    repack: RepackDecision
    models: tuple[ModelCheck, ...] = field(default_factory=tuple)
    runtime_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.runtime_error is None and all(
            check.status in ("ok", "not present") for check in self.models
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runtime": dict(self.runtime),
            "runtime_error": self.runtime_error,
            "threads": self.threads,
            "repack": {"enabled": self.repack.enabled, "reason": self.repack.reason},
            "models": [
                {
                    "name": check.name,
                    "sha256": check.short_sha,
                    "status": check.status,
                    "message": check.message,
                    "load_seconds": check.load_seconds,
                    "tokens_per_second": check.tokens_per_second,
                    "output": check.output,
                    "diagnosis": dict(check.diagnosis) if check.diagnosis else None,
                }
                for check in self.models
            ],
        }


def run_doctor(
    registry: ModelRegistry, *, repack_setting: str | bool | None = None
) -> DoctorReport:
    """Probe the runtime in a worker, then load and run every locked model present locally.

    The caller builds the registry (``smallmodel doctor``: over the project's lock).
    """
    settings = registry.settings_for("", {}, "doctor")
    setting = settings.repack if repack_setting is None else repack_setting
    try:
        runtime = probe_runtime(timeout=max(settings.timeout, 60.0))
    except EngineError as error:
        return DoctorReport(
            runtime={},
            threads=default_threads(),
            repack=RepackDecision(bool(setting is not False), "unknown: the runtime did not start"),
            runtime_error=str(error),
        )
    repack = decide_repack(setting, str(runtime.get("system_info", "")), _flags(runtime))
    checks = tuple(_check_model(registry, name) for name in sorted(registry.lock.models))
    return DoctorReport(runtime=runtime, threads=default_threads(), repack=repack, models=checks)


def _flags(runtime: Mapping[str, Any]) -> list[str]:
    return list((runtime.get("cpu") or {}).get("flags", []))


def _check_model(registry: ModelRegistry, name: str) -> ModelCheck:
    locked = registry.lock.models[name]
    short = locked.short_sha
    try:
        path = registry.verified_path(locked)
    except ModelUnavailable as error:
        status: CheckStatus = "not present" if error.missing else "failed"
        return ModelCheck(name, short, status, str(error))
    spec = registry.project.models.get(name)
    model: Backend | None = None
    serving = spec.serving if spec is not None else Serving()
    try:
        settings = registry.settings_for(name, {}, f"doctor ({name})")
        from pytest_smallmodel.pins.chat_template import load_template

        # The model's own backend: a managed llama-server is started, a running one is asked.
        load = LoadSpec(
            name=name,
            path=path,
            sha256=locked.sha256,
            settings=settings,
            embedding=bool(spec and spec.embedding),
            chat_template=load_template(registry.project, name, locked.chat_template_file),
        )
        model = open_backend(serving, load, defer_weights=False)
        engine = serving.backend
        if serving.server is not None:
            engine += f" at {serving.server} (api {serving.api})"
        if model.embedding:
            started = time.perf_counter()
            vector = model.embed(PROBE_PROMPT)
            return ModelCheck(
                name,
                short,
                "ok",
                f"embedding of {len(vector)} dimensions in "
                f"{(time.perf_counter() - started) * 1000:.0f} ms",
                load_seconds=model.stats.load_seconds,
                engine=engine,
            )
        steps, _, timings = model.decode(
            model.tokenize(PROBE_PROMPT), Decoding(max_tokens=PROBE_TOKENS, top_k=1)
        )
        return ModelCheck(
            name,
            short,
            "ok",
            f"decoded {len(steps)} tokens",
            load_seconds=model.stats.load_seconds,
            tokens_per_second=timings.tokens_per_second,
            output="".join(step.text for step in steps),
            engine=engine,
        )
    except EngineCrash as crash:
        return ModelCheck(
            name, short, "crashed", crash.diagnosis.headline(), diagnosis=crash.diagnosis.to_dict()
        )
    except SmallModelError as error:
        return ModelCheck(name, short, "failed", str(error))
    finally:
        if model is not None:
            model.close()


def render_text(report: DoctorReport) -> str:
    runtime = report.runtime
    lines = ["runtime:"]
    if report.runtime_error:
        lines.append(f"  error: {report.runtime_error}")
    else:
        cpu = runtime.get("cpu") or {}
        lines += [
            f"  llama-cpp-python {runtime.get('llama_cpp_python')}, python "
            f"{runtime.get('python')}, {runtime.get('os')} {runtime.get('arch')}",
            f"  llama.cpp build: {runtime.get('system_info')}",
            f"  CPU: {cpu.get('model')}",
            f"  CPU kernel flags: {' '.join(cpu.get('flags', [])) or '(unknown)'}",
            f"  GPU offload supported: {runtime.get('gpu_offload_supported')}; devices: "
            f"{', '.join(runtime.get('gpu_devices') or []) or '(none)'}",
        ]
        missing = missing_cpu_features(str(runtime.get("system_info", "")), _flags(runtime))
        if missing:
            lines.append(
                f"  WARNING: the build uses {', '.join(missing)}, which this CPU lacks "
                "(expect SIGILL): rebuild llama-cpp-python on this machine"
            )
    lines.append(f"  threads per model: {report.threads}")
    state = "on" if report.repack.enabled else "off"
    lines.append(f"  repack: {state} ({report.repack.reason})")
    lines.append("models:")
    if not report.models:
        lines.append("  (none locked)")
    for check in report.models:
        head = f"  {check.name}@{check.short_sha}: {check.status}"
        if check.engine != "llama-cpp-python":
            head += f" via {check.engine}"
        if check.status == "ok":
            figures = [f"loaded in {check.load_seconds:.2f}s"] if check.load_seconds else []
            if check.tokens_per_second:
                figures.append(f"{check.tokens_per_second:.1f} tokens/s")
            head += f" ({', '.join(figures)})" if figures else ""
            if check.output is not None:
                head += f": {check.output!r}"
            else:
                head += f": {check.message}"
            lines.append(head)
            continue
        lines.append(f"{head}: {check.message.splitlines()[0] if check.message else ''}")
        if check.diagnosis:
            for hint in check.diagnosis.get("hints", []):
                lines.append(f"    hint: {hint}")
            for line in check.diagnosis.get("fault_report", [])[:12]:
                lines.append(f"    {line}")
            tail = check.diagnosis.get("log_tail", [])
            if tail:
                lines.append("    last lines of llama.cpp's log:")
                lines += [f"      {line}" for line in tail]
    lines.append("ok" if report.ok else "FAILED: see above")
    return "\n".join(lines)
