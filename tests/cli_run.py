"""Run the real ``smallmodel`` CLI in-process (click's runner), as the CLI tests do, and a
project's own test suite in a fresh pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from pytest_smallmodel.cli import main


def run(root: Path, *args: str) -> Result:
    """``smallmodel --project ROOT ARGS``; an unexpected exception or a traceback fails the test."""
    result = CliRunner().invoke(main, ["--project", str(root), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


def run_suite(root: Path, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest TARGET ARGS`` in the project at ``root``, its model cache its own."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", target, "-p", "no:cacheprovider", "-q", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONDONTWRITEBYTECODE": "1",
            "SMALLMODEL_CACHE_DIR": str(root / ".cache"),
        },
        check=False,
    )
