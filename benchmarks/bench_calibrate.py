"""Cost of `smallmodel calibrate` on the example suite (golden/examples, 11 goldens).

Runs, in this process and on this project: (1) the baseline, one replay of every golden under
its recorded settings only (one load, the batched pass, one greedy decode each): what checking
the suite once in tolerance mode costs; (2) the whole benign matrix (`run_calibration`, what the
command does). Prints both times and their ratio; the issue's budget is 3 minutes for (2) on 2
cores.

Run: SMALLMODEL_THREADS=2 python benchmarks/bench_calibrate.py [--no-server]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from suite import machine

from pytest_smallmodel.cli.calibrate import read_goldens, run_calibration
from pytest_smallmodel.engine.registry import ModelRegistry
from pytest_smallmodel.engine.variants import BATCHED, Load, VariantReplayer
from pytest_smallmodel.pins.project import load_project

ROOT = Path(__file__).resolve().parents[1]


def baseline() -> float:
    """Every golden once, under its recorded settings: one load, batched pass and decode."""
    project = load_project(ROOT)
    by_model, _ = read_goldens(ROOT / project.options.golden_dir, ROOT)
    registry = ModelRegistry(project)
    only = [Load("as recorded", "the golden's settings", lambda s: {}, ((BATCHED, True),))]
    started = time.perf_counter()
    try:
        for name, goldens in by_model.items():
            VariantReplayer(registry.base_spec(name), registry.pool, only=only).replay(goldens)
    finally:
        registry.close()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()
    print(machine())
    once = baseline()
    project = load_project(ROOT)
    registry = ModelRegistry(project)
    started = time.perf_counter()
    try:
        report = run_calibration(project, registry, [], server=not args.no_server)
    finally:
        registry.close()
    full = time.perf_counter() - started
    goldens = sum(len(m.goldens) for m in report.models)
    print(f"baseline, every golden once (recorded settings, batched pass): {once:.1f}s")
    print(
        f"calibrate, {goldens} goldens x {len(report.ran)} variants ({', '.join(report.ran)}): "
        f"{full:.1f}s = {full / once:.1f}x the baseline"
    )
    for line in report.unavailable:
        print(f"not run here: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
