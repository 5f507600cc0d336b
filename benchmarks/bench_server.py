"""Per-token cost of the managed llama-server backend versus the in-process engine, same model.

Both run through ``ModelHandle`` (what a test calls), one after the other in this process,
alternating rounds: 16 prompts x 64 generated tokens each, plus the teacher-forced check of the
same tokens (what tolerance mode costs on each backend: the batched pass in-process, one
forcing request on the server). Figures are ratios of medians, server / in-process.

Run: python benchmarks/bench_server.py [--repeat N] [--tokens N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from suite import SUBJECTS, machine, smollm2_path

from pytest_smallmodel.common.settings import EngineSettings, LoadSpec, default_threads
from pytest_smallmodel.engine.backend import Forcing
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.pins.project import Serving

SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _timed(action: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = action()
    return time.perf_counter() - started, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    path = smollm2_path()
    prompts = [f"Write a short paragraph about {subject}." for subject in SUBJECTS[:16]]
    settings = EngineSettings()
    print(f"machine: {machine()}; threads: {default_threads()}")
    pool = ModelPool()
    try:
        handles: dict[str, ModelHandle] = {}
        for label, serving in (
            ("in-process", Serving()),
            ("llama-server", Serving("llama-server")),
        ):
            started = time.perf_counter()
            loaded = pool.get(
                LoadSpec(
                    name="smollm2", path=path, sha256=SHA256, settings=settings, embedding=False
                ),
                serving=serving,
            )
            handles[label] = ModelHandle(loaded, settings)
            print(f"{label}: ready in {time.perf_counter() - started:.2f} s")
        goldens = {p: handles["in-process"].generate(p, max_tokens=args.tokens) for p in prompts}

        def generate(handle: ModelHandle) -> int:
            return sum(len(handle.generate(p, max_tokens=args.tokens).tokens) for p in prompts)

        def check(handle: ModelHandle) -> int:
            """The tolerance-mode check of every golden: ``verify`` (batched in-process, one
            teacher-forced request on the server)."""
            return sum(
                len(
                    handle._model.verify(
                        golden.prompt_tokens, Forcing(tuple(golden.tokens), 5), timeout=600
                    )
                )
                for golden in goldens.values()
            )

        samples: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for label, handle in handles.items():
                seconds, tokens = _timed(lambda handle=handle: generate(handle))
                samples.setdefault(f"generate {label}", []).append(seconds / tokens)
                seconds, tokens = _timed(lambda handle=handle: check(handle))
                samples.setdefault(f"golden check {label}", []).append(seconds / tokens)
        for name, values in samples.items():
            print(
                f"{name}: {statistics.median(values) * 1000:.2f} ms/token (median of {len(values)})"
            )
        ratio = statistics.median(samples["generate llama-server"]) / statistics.median(
            samples["generate in-process"]
        )
        check_ratio = statistics.median(samples["golden check llama-server"]) / statistics.median(
            samples["golden check in-process"]
        )
        print(f"generate, server / in-process per token: {ratio:.3f}")
        print(f"golden check (tolerance mode), server / in-process per token: {check_ratio:.3f}")
        identical = sum(
            handles["llama-server"].generate(p, max_tokens=args.tokens).tokens == g.tokens
            for p, g in goldens.items()
        )
        print(f"identical generations, server vs in-process: {identical}/{len(prompts)}")
    finally:
        pool.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
