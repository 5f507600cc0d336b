"""pytest-smallmodel: pin small GGUF models by SHA-256 and regression-test their greedy outputs."""

from __future__ import annotations

__version__ = "0.1.0"

from pytest_smallmodel.evaluation.cases import Case, cases_from, load_cases
from pytest_smallmodel.evaluation.report import EvaluationReport
from pytest_smallmodel.evaluation.stats import EvaluationError

__all__ = ["Case", "EvaluationError", "EvaluationReport", "__version__", "cases_from", "load_cases"]
