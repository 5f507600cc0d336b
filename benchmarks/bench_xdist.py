"""pytest-xdist: the 40-test suite with ``-n 2`` versus ``-n 0``, plus resident memory per worker.

Run: python benchmarks/bench_xdist.py [--workers N] [--repeat N]. On a 2-core machine the target
is ``-n 2`` no worse than 1.15x ``-n 0`` (the cores are split between workers, never
oversubscribed); on a machine with more cores it reports the speed-up. The model file is
memory-mapped, so its pages are shared: PSS (proportional set size) shows each worker's share.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from suite import compare, env, machine, make_project, memory_records, pytest_command, report, timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = make_project(Path(scratch))
        environment = env(root)
        print(f"machine: {machine()}")
        timed(pytest_command(), root, environment)  # warm caches
        samples = compare(
            {
                "-n 0": lambda: timed(pytest_command("-n", "0"), root, environment),
                f"-n {args.workers}": lambda: timed(
                    pytest_command("-n", str(args.workers)), root, environment
                ),
            },
            args.repeat,
        )
        ratios = report(samples, "-n 0")
        ratio = ratios[f"-n {args.workers}"]
        print(f"xdist ratio (-n {args.workers} / -n 0): {ratio:.3f} (speed-up {1 / ratio:.2f}x)")
        memory_dir = root / "memory"
        memory_dir.mkdir()
        timed(
            pytest_command("-n", str(args.workers)),
            root,
            env(root, BENCH_MEMORY_DIR=str(memory_dir)),
        )
        for worker, record in memory_records(memory_dir).items():
            print(
                f"  {worker}: max RSS {record['max_rss_kib'] / 1024:.0f} MiB, "
                f"RSS {(record['rss_kib'] or 0) / 1024:.0f} MiB, "
                f"PSS {(record['pss_kib'] or 0) / 1024:.0f} MiB"
            )
        cores = len(os.sched_getaffinity(0))
        if cores <= 2:
            print("target on <= 2 cores: ratio <= 1.15")
            return 0 if ratio <= 1.15 else 1
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
