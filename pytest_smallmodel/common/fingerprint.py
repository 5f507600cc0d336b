"""The environment fingerprint: a JSON record of what, besides the request, can change tokens.

Measured (docs/determinism.md): the llama.cpp build (its compiled SIMD features), the runtime
version, the hardware and backend, weight repacking and the numeric settings all move logits;
thread count does not. Drift reports name the fields that differ between a golden and the
current run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.results import RepackDecision
from pytest_smallmodel.common.version import __version__

FINGERPRINT_VERSION = 1

# Settings recorded only since they were added, with the value llama.cpp used before: a golden
# without them was made with that value, so it is not a changed request.
IMPLICIT_SETTINGS: Mapping[str, Any] = {"swa_full": True}

# Fields recorded for the reader but known not to change tokens: ignored when deciding drift.
INFORMATIONAL_FIELDS: frozenset[str] = frozenset(
    {"n_threads", "server_url", "limitations", "identity"}
)

# Fields recorded only since they were added, with the value every earlier run had: a golden
# without them was made with that value, so their absence is not a difference.
IMPLICIT_FIELDS: Mapping[str, Any] = {
    "repack": True,
    "engine": "llama-cpp-python",
    **{f"settings.{name}": value for name, value in IMPLICIT_SETTINGS.items()},
}


def normalized_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded request with settings recorded since it was written filled in as they were."""
    normalized = dict(request)
    if isinstance(normalized.get("settings"), Mapping):
        settings = {**IMPLICIT_SETTINGS, **normalized["settings"]}
        normalized["settings"] = dict(sorted(settings.items()))
    return normalized


# CPU flags that select llama.cpp/ggml kernels; the rest of /proc/cpuinfo's flags are noise here.
_KERNEL_FLAG_RE = re.compile(
    r"^(sse\d.*|ssse3|avx.*|fma|f16c|amx.*|vnni.*|bmi2|neon|asimd.*|sve.*|sme.*|dotprod|i8mm|bf16|fp16|vsx.*)$"
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mapped_llama_libraries(maps: Path) -> list[Path]:
    """Shared libraries of llama.cpp/ggml a process has mapped (the ones that actually run),
    from its ``/proc/<pid>/maps``; empty where that cannot be read."""
    found: set[Path] = set()
    try:
        text = maps.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        name = Path(path).name
        if path.startswith("/") and ("llama" in name or "ggml" in name) and ".so" in name:
            found.add(Path(path))
    return sorted(found)


def _loaded_llama_libraries() -> list[Path]:
    """Shared libraries of llama.cpp/ggml mapped into this process (the ones that actually run)."""
    found = set(mapped_llama_libraries(Path("/proc/self/maps")))
    if not found:
        import llama_cpp

        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        found = {p for p in lib_dir.glob("*") if p.suffix in (".so", ".dylib", ".dll")}
    return sorted(found)


def cpu_facts() -> dict[str, Any]:
    """CPU model and the kernel-selecting flags (no llama.cpp needed)."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text(errors="replace") if cpuinfo.exists() else ""
    return parse_cpuinfo(text, platform.processor() or platform.machine())


def parse_cpuinfo(text: str, model: str = "") -> dict[str, Any]:
    """CPU model and kernel-selecting flags of a /proc/cpuinfo text (first CPU's lines)."""
    flags: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and model in ("", platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = sorted(f for f in value.split() if _KERNEL_FLAG_RE.match(f))
    return {"model": model, "flags": flags}


def _gpu_devices() -> list[str]:
    """Names of ggml backend devices other than the CPU, when the build exposes them."""
    try:
        import ctypes

        import llama_cpp.llama_cpp as lib

        ggml = lib._lib  # the loaded libllama, which links ggml's device registry
        ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
        ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        ggml.ggml_backend_dev_description.restype = ctypes.c_char_p
        ggml.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        ggml.ggml_backend_dev_type.restype = ctypes.c_int
        ggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        names = []
        for index in range(ggml.ggml_backend_dev_count()):
            device = ggml.ggml_backend_dev_get(index)
            if ggml.ggml_backend_dev_type(device) != 0:  # 0 = GGML_BACKEND_DEVICE_TYPE_CPU
                names.append(ggml.ggml_backend_dev_description(device).decode(errors="replace"))
        return names
    except (AttributeError, OSError, ImportError):
        return []


@functools.cache
def runtime_fingerprint() -> dict[str, Any]:
    """The part that depends only on this process's runtime and machine (computed once)."""
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "libraries": {p.name: sha256_file(p) for p in _loaded_llama_libraries()},
        "system_info": system_info,
        "cpu": cpu_facts(),
        "os": platform.system(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "gpu_offload_supported": bool(llama_cpp.llama_supports_gpu_offload()),
        "gpu_devices": _gpu_devices(),
    }


def runtime_stamp() -> dict[str, Any]:
    """What ``runtime_fingerprint`` depends on, read without importing llama_cpp: the interpreter,
    this package's version, the identity (size, mtime, inode) of llama_cpp's modules and shared
    libraries, the environment variables that steer library loading, and the CPU.

    The result cache keeps the runtime facts of the last engine worker under this stamp
    (``ResultCache.known_runtime``), so an unchanged rerun builds its keys without starting a
    worker; the trust placed in file identities is the one the model-file stat cache makes.
    """
    spec = importlib.util.find_spec("llama_cpp")  # finds the package without executing it
    package = Path(spec.origin).parent if spec is not None and spec.origin else None
    files: dict[str, list[int]] = {}
    directories = [package] if package is not None else []
    library_path = os.environ.get("LLAMA_CPP_LIB_PATH")
    if library_path:
        directories.append(Path(library_path))
    elif package is not None:
        directories.append(package / "lib")
    for directory in directories:
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat()
            except OSError:
                continue
            if entry.is_file():
                files[str(entry)] = [info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev]
    environment = {
        key: value
        for key, value in sorted(os.environ.items())
        if key.startswith(("GGML_", "LLAMA_", "CUDA_", "HIP_", "ROCR_", "VK_"))
        or key in ("LD_LIBRARY_PATH", "LD_PRELOAD", "DYLD_LIBRARY_PATH")
    }
    return {
        "pytest_smallmodel": __version__,
        "fingerprint_version": FINGERPRINT_VERSION,
        "python": [os.path.realpath(sys.executable), sys.version],
        "platform": [platform.system(), platform.machine(), platform.release()],
        "llama_cpp": files,
        "environment": environment,
        "cpu": cpu_facts(),
    }


_AMX_CRASH = (
    "llama.cpp's AMX kernels crash on the first decode on this CPU class (upstream llama.cpp "
    "issue 20824; docs/drift.md)"
)


def decide_repack(
    setting: str | bool, system_info: str, cpu_flags: Sequence[str]
) -> RepackDecision:
    """The effective ``repack`` value for ``setting`` on this build (``system_info``) and CPU.

    ``"auto"`` turns repacking off only where the loaded build has the AMX kernels and the CPU
    has AMX, which is exactly where ``ggml_backend_amx_mul_mat`` crashes; elsewhere repacking is
    llama.cpp's default and the faster path.
    """
    if setting is True:
        return RepackDecision(True, "repack = true in the settings")
    if setting is False:
        return RepackDecision(False, "repack = false in the settings")
    build_has_amx = re.search(r"\bAMX_INT8 = 1\b", system_info) is not None
    cpu_has_amx = any(flag.startswith("amx") for flag in cpu_flags)
    if build_has_amx and cpu_has_amx:
        return RepackDecision(
            False,
            "auto: this llama.cpp build has AMX kernels and the CPU has AMX; " + _AMX_CRASH,
        )
    if build_has_amx:
        return RepackDecision(True, "auto: the build has AMX kernels but this CPU has no AMX")
    return RepackDecision(True, "auto: this llama.cpp build has no AMX kernels")


def model_fingerprint(
    *,
    model: str,
    sha256: str,
    numeric_settings: Mapping[str, Any],
    n_threads: int,
    repack: bool,
    runtime: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fingerprint of one loaded model; ``runtime`` defaults to this process's
    ``runtime_fingerprint()`` (the result cache passes facts a worker reported earlier)."""
    if runtime is None:
        runtime = runtime_fingerprint()
    offloading = numeric_settings.get("n_gpu_layers", 0) != 0 and runtime["gpu_offload_supported"]
    return {
        "version": FINGERPRINT_VERSION,
        "model": model,
        "sha256": sha256,
        "engine": "llama-cpp-python",
        **runtime,
        "backend": _backend_name(runtime["system_info"]) if offloading else "CPU",
        "settings": dict(sorted(numeric_settings.items())),
        "repack": repack,
        "n_threads": n_threads,
    }


def _backend_name(system_info: str) -> str:
    for name in ("CUDA", "Metal", "Vulkan", "SYCL", "HIP", "CANN", "OpenCL", "Kompute"):
        if re.search(rf"\b{name}\b", system_info, re.IGNORECASE):
            return name
    return "GPU"


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"cpu": {"model": x}}`` -> ``{"cpu.model": x}`` so differences can be named by path."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def differences(
    recorded: Mapping[str, Any], current: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """Fields that can change tokens and differ: ``(path, recorded, current)``, sorted by path."""
    old = {**IMPLICIT_FIELDS, **flatten(recorded)}
    new = {**IMPLICIT_FIELDS, **flatten(current)}
    paths = set(old) | set(new)
    if old["engine"] != new["engine"]:
        # Another engine records other facts (library hashes, a server's /props): a field only
        # one of them has is not a difference; the engine change and the shared fields are.
        paths = (set(old) & set(new)) | {"engine"}
    changed = []
    for path in sorted(paths):
        if path.split(".")[0] in INFORMATIONAL_FIELDS:
            continue
        if old.get(path) != new.get(path):
            changed.append((path, old.get(path), new.get(path)))
    return changed
