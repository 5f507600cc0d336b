"""pytest-smallmodel: pin small GGUF models by SHA-256 and regression-test their greedy outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the types of the names loaded lazily below
    from pytest_smallmodel.evaluation.cases import Case, cases_from, load_cases
    from pytest_smallmodel.evaluation.report import EvaluationReport
    from pytest_smallmodel.evaluation.stats import EvaluationError

from pytest_smallmodel.common.version import __version__

# What tests import from the package root, loaded on first use: importing the package (as every
# module and the engine worker do) stays as light as before.
_EXPORTS = {
    "Case": "pytest_smallmodel.evaluation.cases",
    "cases_from": "pytest_smallmodel.evaluation.cases",
    "load_cases": "pytest_smallmodel.evaluation.cases",
    "EvaluationReport": "pytest_smallmodel.evaluation.report",
    "EvaluationError": "pytest_smallmodel.evaluation.stats",
}

__all__ = [
    "Case",
    "EvaluationError",
    "EvaluationReport",
    "__version__",
    "cases_from",
    "load_cases",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pytest_smallmodel' has no attribute {name!r}")
