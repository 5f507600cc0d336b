"""The JSON report of a session, written and read back through the schema the package ships."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema

from pytest_smallmodel.drift.reports import DriftLog


def written_report(log: DriftLog, directory: Path) -> dict[str, Any]:
    """``log`` written as --smallmodel-report-json does, read back and checked by the schema."""
    path = directory / "drift.json"
    log.write_json(path)
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    schema = json.loads(
        importlib.resources.files("pytest_smallmodel").joinpath("report.schema.json").read_text()
    )
    jsonschema.Draft202012Validator(schema).validate(report)
    return report
