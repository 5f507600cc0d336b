"""Run the real ``smallmodel`` CLI in-process (click's runner), as the CLI tests do."""

from __future__ import annotations

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
