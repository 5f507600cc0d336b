"""The environment fingerprint: a JSON record of what, besides the request, can change tokens.

Measured (docs/determinism.md): the llama.cpp build (its compiled SIMD features), the runtime
version, the hardware and backend, weight repacking and the numeric settings all move logits;
thread count does not. Drift reports name the fields that differ between a golden and the
current run.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_smallmodel.settings import IMPLICIT_SETTINGS

FINGERPRINT_VERSION = 1

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


def _loaded_llama_libraries() -> list[Path]:
    """Shared libraries of llama.cpp/ggml mapped into this process (the ones that actually run)."""
    maps = Path("/proc/self/maps")
    found: set[Path] = set()
    if maps.exists():
        for line in maps.read_text().splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            name = Path(path).name
            if path.startswith("/") and ("llama" in name or "ggml" in name) and ".so" in name:
                found.add(Path(path))
    if not found:
        import llama_cpp

        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        found = {p for p in lib_dir.glob("*") if p.suffix in (".so", ".dylib", ".dll")}
    return sorted(found)


def cpu_facts() -> dict[str, Any]:
    """CPU model and the kernel-selecting flags (no llama.cpp needed)."""
    model = platform.processor() or platform.machine()
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
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


def model_fingerprint(
    *,
    model: str,
    sha256: str,
    numeric_settings: Mapping[str, Any],
    n_threads: int,
    repack: bool,
) -> dict[str, Any]:
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
