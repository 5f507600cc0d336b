"""Result cache: an unchanged rerun of the 40-test suite with ``--smallmodel-cache`` versus a cold
run (empty cache) of the same suite.

Run: python benchmarks/bench_cache.py [--repeat N]. Whole-process wall time, medians. Target:
warm / cold <= 0.05 (the warm run starts no engine worker: results, prompt tokens and runtime facts
come from the cache).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from suite import (
    UNRELATED_PLUGINS_OFF,
    compare,
    env,
    machine,
    make_project,
    pytest_command,
    report,
    timed,
)

TARGET = 0.05


def measure(repeat: int) -> float:
    """Warm / cold median wall time of the 40-test suite with ``--smallmodel-cache``, without
    the unrelated anyio plugin (as ``bench_overhead.py``); the warm run with every installed
    plugin is printed too."""
    with tempfile.TemporaryDirectory() as scratch:
        root = make_project(Path(scratch))
        environment = env(root)
        results = root / ".cache" / "results"
        timed(pytest_command(), root, environment)  # warm the stat cache and the page cache
        flags = ("--smallmodel-cache", *UNRELATED_PLUGINS_OFF)

        def cold() -> float:
            shutil.rmtree(results, ignore_errors=True)
            return timed(pytest_command(*flags), root, environment)

        def warm() -> float:
            if not results.exists():
                timed(pytest_command(*flags), root, environment)
            return timed(pytest_command(*flags), root, environment)

        def warm_all_plugins() -> float:
            if not results.exists():
                timed(pytest_command(*flags), root, environment)
            return timed(pytest_command("--smallmodel-cache"), root, environment)

        samples = compare(
            {
                "cold (empty cache)": cold,
                "warm (unchanged rerun)": warm,
                "warm, all plugins": warm_all_plugins,
            },
            repeat,
        )
        return report(samples, "cold (empty cache)")["warm (unchanged rerun)"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    ratio = measure(args.repeat)
    print(f"cache ratio (warm / cold): {ratio:.3f} (target <= {TARGET})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
