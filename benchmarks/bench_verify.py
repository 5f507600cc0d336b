"""Verification at prefill speed (issue 13), three ratios in one invocation:

1. tolerance mode: 20 generations of 64 tokens whose goldens carry a changed fingerprint,
   checked with one batched teacher-forced pass (the default) versus the decode path
   (``--smallmodel-verify=decode``, what tolerance mode did before). Target <= 0.50. Reported
   for the tests' own time (pytest's call phase: the model call plus the golden comparison,
   summed) and for the whole process (adds pytest start-up and the model load to both sides).
2. ``classify`` with 8 labels versus 1 label on the same prompt (in one worker). Target <= 1.5.
3. the 40-test suite rerun unchanged with ``--smallmodel-cache`` versus a cold run (empty
   cache), as ``bench_cache.py`` measures it. Target <= 0.05.

Run: python benchmarks/bench_verify.py [--repeat N] [--model PATH.gguf]. Variants alternate,
medians are reported. ``--model`` adds ratio 1 for another GGUF file (chat template required).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_cache
from suite import (
    SMOLLM2_DISTRIBUTION,
    SMOLLM2_FILE,
    compare,
    env,
    lock,
    machine,
    report,
    smollm2_path,
)

N_GENERATIONS = 20
MAX_TOKENS = 64
SUBJECTS = [
    "a lighthouse keeper",
    "a lost cat",
    "the first snow",
    "a night train",
    "an old violin",
    "a market at dawn",
    "a desert well",
    "a library ghost",
    "a river crossing",
    "a mountain hut",
    "a city bakery",
    "an autumn storm",
    "a museum guard",
    "a broken clock",
    "a garden robot",
    "a ferry captain",
    "a quiet village",
    "a paper kite",
    "a copper key",
    "a harbour fog",
]
assert len(SUBJECTS) == N_GENERATIONS

VERIFY_SUITE = f"""
import pytest

SUBJECTS = {SUBJECTS!r}

@pytest.mark.model("bench")
@pytest.mark.parametrize("subject", SUBJECTS)
def test_story(model, golden, subject):
    messages = [{{"role": "user", "content": f"Write a long story about {{subject}}."}}]
    assert model.chat(messages, max_tokens={MAX_TOKENS}) == golden
"""

# Sums the call phase of every test (model call + golden comparison) into a file.
CALL_TIME_CONFTEST = """
import os

def pytest_runtest_logreport(report):
    if report.when == "call" and os.environ.get("BENCH_CALL_TIME"):
        with open(os.environ["BENCH_CALL_TIME"], "a") as out:
            out.write(f"{report.duration}\\n")
"""

CLASSIFY_PROMPT = [
    {
        "role": "user",
        "content": "Route this support ticket to one queue. Ticket: I was charged twice for my "
        "annual plan this morning, the second charge shows as pending on my card, and the app "
        "now says my subscription expired. I need the duplicate refunded and my access back "
        "before my team's demo tomorrow. Queue:",
    }
]
LABELS = [
    " billing",
    " bug report",
    " account access",
    " refund",
    " feature request",
    " sales",
    " security incident",
    " other",
]


def make_verify_project(root: Path, model: Path | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    spec = (
        f'{{ path = "{model}" }}'
        if model is not None
        else f'{{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}'
    )
    (root / "pyproject.toml").write_text(f"[tool.smallmodel.models]\nbench = {spec}\n")
    (root / "test_verify_bench.py").write_text(VERIFY_SUITE)
    (root / "conftest.py").write_text(CALL_TIME_CONFTEST)
    return lock(root)


def age_goldens(root: Path) -> int:
    """Mark every golden as recorded under another llama-cpp-python version (a fingerprint-only
    change: tolerance mode); returns how many tokens the goldens hold."""
    tokens = 0
    for path in sorted((root / "golden").rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["fingerprint"]["llama_cpp_python"] = "0.0.0-recorded-elsewhere"
        tokens += len(data["tokens"])
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return tokens


def run_suite(root: Path, environment: dict[str, str], *args: str) -> tuple[float, float]:
    """(whole-process seconds, summed call-phase seconds) of one pytest run."""
    calls = root / "call-time.txt"
    calls.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=root,
        env={**environment, "BENCH_CALL_TIME": str(calls)},
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return elapsed, sum(float(x) for x in calls.read_text().split())


def bench_tolerance(repeat: int, model: Path | None) -> float:
    name = model.name if model is not None else "SmolLM2-135M-Instruct Q4_1"
    print(f"\n[1] tolerance mode: {N_GENERATIONS} generations x {MAX_TOKENS} tokens, {name}")
    with tempfile.TemporaryDirectory() as scratch:
        root = make_verify_project(Path(scratch), model)
        environment = env(root)
        run_suite(root, environment, "--snapshot-update")
        tokens = age_goldens(root)
        print(f"  goldens hold {tokens} tokens; their fingerprint names another runtime")
        whole: dict[str, list[float]] = {"decode path": [], "batched pass": []}
        calls: dict[str, list[float]] = {"decode path": [], "batched pass": []}
        for _ in range(repeat):
            for variant, option in (("decode path", "decode"), ("batched pass", "batched")):
                seconds, call_seconds = run_suite(
                    root, environment, f"--smallmodel-verify={option}"
                )
                whole[variant].append(seconds)
                calls[variant].append(call_seconds)
        print("  tests' own time (call phase, summed):")
        call_ratio = report(calls, "decode path")["batched pass"]
        print("  whole process:")
        whole_ratio = report(whole, "decode path")["batched pass"]
        print(
            f"  tolerance ratio (batched / decode): {call_ratio:.3f} tests' time, "
            f"{whole_ratio:.3f} whole process (target <= 0.50)"
        )
        return call_ratio


def bench_classify(repeat: int) -> float:
    print(f"\n[2] classify: {len(LABELS)} labels vs 1 label on the same prompt")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
    from pytest_smallmodel.engine.handle import ModelHandle
    from pytest_smallmodel.engine.pool import ModelPool

    pool = ModelPool()
    try:
        settings = EngineSettings()
        loaded = pool.get(
            LoadSpec(
                name="smollm2",
                path=smollm2_path(),
                sha256="0" * 64,
                settings=settings,
                embedding=False,
            )
        )
        handle = ModelHandle(loaded, settings)
        handle.classify(CLASSIFY_PROMPT, LABELS)  # loads the weights, warms the caches
        prompt = handle.classify(CLASSIFY_PROMPT, LABELS[:1]).provenance.request.prompt_tokens
        label_tokens = [len(handle._model.tokenize(x, add_bos=False)) for x in LABELS]
        print(f"  prompt {len(prompt)} tokens; label tokens {label_tokens}")

        def timed_classify(labels: list[str]) -> float:
            started = time.perf_counter()
            for _ in range(5):
                handle.classify(CLASSIFY_PROMPT, labels)
            return (time.perf_counter() - started) / 5

        samples = compare(
            {
                "1 label": lambda: timed_classify(LABELS[:1]),
                f"{len(LABELS)} labels": lambda: timed_classify(LABELS),
            },
            repeat * 3,
        )
    finally:
        pool.close()
    ratio = report(samples, "1 label")[f"{len(LABELS)} labels"]
    print(f"  classify ratio ({len(LABELS)} labels / 1 label): {ratio:.3f} (target <= 1.5)")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="another GGUF for ratio 1")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"machine: {machine()}; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"threads: SMALLMODEL_THREADS={os.environ.get('SMALLMODEL_THREADS', '(all cores)')}")
    tolerance = bench_tolerance(args.repeat, None)
    extra = bench_tolerance(args.repeat, args.model.resolve()) if args.model else None
    classify = bench_classify(args.repeat)
    print(f"\n[3] cached unchanged rerun vs cold run ({bench_cache.__name__}.py)")
    cache = bench_cache.measure(args.repeat)
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"tolerance batched / decode:  {tolerance:.3f} (target <= 0.50)")
    if extra is not None:
        print(f"  {args.model.name}: {extra:.3f}")
    print(f"classify 8 labels / 1 label: {classify:.3f} (target <= 1.5)")
    print(f"cache warm / cold:           {cache:.3f} (target <= 0.05)")
    ok = tolerance <= 0.50 and classify <= 1.5 and cache <= bench_cache.TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
