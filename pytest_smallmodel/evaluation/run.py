"""Running a task over cases: one warm-up call, then each case timed, errors kept per case."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.progress import progress
from pytest_smallmodel.evaluation.cases import Case, cases_from, load_cases
from pytest_smallmodel.evaluation.report import CaseResult, EvaluationReport, build_report
from pytest_smallmodel.evaluation.scoring import Verdict, score
from pytest_smallmodel.evaluation.stats import EvaluationError

CaseSource = str | Path | Iterable[Case | Mapping[str, Any]]


def as_cases(cases: CaseSource) -> list[Case]:
    if isinstance(cases, str | Path):
        return load_cases(cases)
    listed = list(cases)
    if not listed:
        raise EvaluationError("the evaluation has no cases: pass a non-empty dataset")
    return cases_from(listed)


def run_cases(
    cases: Sequence[Case],
    call: Callable[[Case], Any],
    *,
    cached_calls: Callable[[], int],
    labels: Sequence[str] | None = None,
    warm_up: Callable[[Case], Any] | None = None,
    last_call: Callable[[], object] | None = None,
) -> EvaluationReport:
    """``call(case)`` for every case, timed; ``cached_calls()`` counts results the result cache
    answered, so a case answered from it is marked "not measured" instead of timed.
    ``warm_up(case)`` runs the first case once before (the handle's runs it past the result
    cache, so that it neither stores nor answers that case). ``last_call()`` is the last model
    call the case's task made (what an evaluation golden stores to replay it)."""
    if not cases:
        raise EvaluationError("the evaluation has no cases: pass a non-empty dataset")
    if warm_up is not None:
        # The first call pays for lazy loading (weights, a server start): not a case's latency.
        with contextlib.suppress(Exception):  # the case itself reports it below
            warm_up(cases[0])
    results = []
    for case in progress(cases, what="cases evaluated"):
        before = cached_calls()
        started = time.perf_counter()
        try:
            output = call(case)
        except EvaluationError:
            raise
        except Exception as error:  # one failing case must not end the rest
            results.append(
                CaseResult(case, None, Verdict(False, ""), error=f"{type(error).__name__}: {error}")
            )
            continue
        elapsed = (time.perf_counter() - started) * 1000
        from_cache = cached_calls() > before or bool(getattr(output, "cached", False))
        tokens = getattr(output, "tokens", None)
        results.append(
            CaseResult(
                case,
                output,
                score(case, output, labels),
                latency_ms=None if from_cache else elapsed,
                tokens=len(tokens) if isinstance(tokens, list) else None,
                call=last_call() if last_call is not None else None,
            )
        )
    return build_report(results)
