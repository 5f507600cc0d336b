"""Plugin overhead: 40 ``generate`` tests (32 tokens) through pytest-smallmodel versus a plain
script making the same 40 llama-cpp-python calls with the same settings.
Both sides pay Python start-up, imports and the model load; the plugin side also pays pytest.

Run: python benchmarks/bench_overhead.py [--repeat N]. Whole-process wall time, medians,
alternating runs. Target: plugin / plain <= 1.10.
"""

from __future__ import annotations

import argparse
import sys
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
    smollm2_path,
    timed,
)

from pytest_smallmodel.common.settings import default_threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = make_project(Path(scratch))
        environment = env(root)
        threads = str(default_threads())
        print(f"machine: {machine()}; threads: {threads}")
        timed(pytest_command(), root, environment)  # warm the stat cache and the page cache
        samples = compare(
            {
                "plain llama-cpp-python": lambda: timed(
                    [sys.executable, "plain.py", str(smollm2_path()), threads], root, environment
                ),
                "pytest-smallmodel": lambda: timed(
                    pytest_command(*UNRELATED_PLUGINS_OFF), root, environment
                ),
                "  (all plugins as installed)": lambda: timed(pytest_command(), root, environment),
            },
            args.repeat,
        )
        ratios = report(samples, "plain llama-cpp-python")
        ratio = ratios["pytest-smallmodel"]
        print(f"overhead ratio (plugin / plain): {ratio:.3f} (target <= 1.10)")
        print(
            "  with every installed pytest plugin autoloaded: "
            f"{ratios['  (all plugins as installed)']:.3f}"
        )
        return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
