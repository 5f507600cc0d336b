"""What `model.evaluate` costs over the model calls it makes: 40 classify cases (the example
suite's labelled tickets) through `evaluate` versus the same 40 `classify` calls in a loop.

evaluate adds one warm-up call (1/40 of the work), scoring and the timing of each case. Both
sides use one loaded model, alternate, and are timed in the same process.

Run: python benchmarks/bench_evaluate.py [--repeat N]. Medians. Target: evaluate / loop <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from suite import machine, smollm2_path

from pytest_smallmodel import load_cases
from pytest_smallmodel.common.settings import EngineSettings, LoadSpec, default_threads
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.pins.project import Serving

SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TICKETS = Path(__file__).parent.parent / "examples" / "data" / "tickets.jsonl"
QUEUES = ["billing", "technical", "account", "shipping"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = load_cases(TICKETS)
    print(f"machine: {machine()}; threads: {default_threads()}; cases: {len(cases)}")
    pool = ModelPool()
    try:
        settings = EngineSettings()
        spec = LoadSpec(
            name="smollm2", path=smollm2_path(), sha256=SHA256, settings=settings, embedding=False
        )
        loaded = pool.get(spec, serving=Serving())
        model = ModelHandle(loaded, settings)

        def route(handle: ModelHandle, case: object) -> object:
            return handle.classify(f"Ticket: {case.input}\nQueue:", QUEUES)  # type: ignore[attr-defined]

        def loop() -> float:
            started = time.perf_counter()
            for case in cases:
                route(model, case)
            return time.perf_counter() - started

        def evaluate() -> float:
            started = time.perf_counter()
            model.evaluate(cases, route, labels=QUEUES)
            return time.perf_counter() - started

        loop()  # load the weights before anything is timed
        samples: dict[str, list[float]] = {"loop": [], "evaluate": []}
        for _ in range(args.repeat):
            samples["loop"].append(loop())
            samples["evaluate"].append(evaluate())
        medians = {name: statistics.median(values) for name, values in samples.items()}
        for name, value in medians.items():
            print(f"  {name:<9} median {value:6.3f} s  min {min(samples[name]):6.3f} s")
        ratio = medians["evaluate"] / medians["loop"]
        print(f"evaluate / loop: {ratio:.3f} (target <= 1.05)")
        return 0 if ratio <= 1.05 else 1
    finally:
        pool.close()


if __name__ == "__main__":
    raise SystemExit(main())
