"""Goldens replayed on another model file than the one they were recorded with: what
calibration's evidence sets a tolerance against (tests/cli/test_calibrate*.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.engine.pool import open_backend
from pytest_smallmodel.engine.variants import INCREMENTAL, measure, recorded_settings, top_k_of
from pytest_smallmodel.goldens.file_format import parse_golden
from pytest_smallmodel.goldens.records import GoldenRecord
from pytest_smallmodel.pins.project import Serving


def goldens_of(root: Path, model: str | None = None) -> list[tuple[str, GoldenRecord]]:
    """The goldens under ``root/golden`` (of ``model`` only, when given), named as reports
    name them."""
    goldens = [
        (path.relative_to(root).as_posix(), parse_golden(path.read_text(), path=str(path)))
        for path in sorted((root / "golden").rglob("*.json"))
    ]
    return [(name, record) for name, record in goldens if model in (None, record.model)]


def drift_on(
    other: Path, goldens: Sequence[tuple[str, GoldenRecord]], tolerance: float
) -> tuple[set[str], set[str]]:
    """Each golden's request decoded and its tokens teacher-forced, incrementally, on the file
    ``other`` under the golden's recorded settings: the goldens whose greedy output differs
    there, and those whose largest gap is above ``tolerance``."""
    differs, caught = set(), set()
    backends: dict[Any, Any] = {}
    try:
        measurements = []
        for name, record in goldens:
            settings = recorded_settings(record, top_k=top_k_of(record))
            if settings not in backends:
                spec = LoadSpec(other.stem, other, "0" * 64, settings)
                backends[settings] = open_backend(Serving(), spec, defer_weights=False)
            measurements += measure(backends[settings], name, record, ((INCREMENTAL, False),))
    finally:
        for backend in backends.values():
            backend.close()
    for measurement in measurements:
        assert measurement.error is None, measurement.error
        if not measurement.identical:
            differs.add(measurement.golden)
        if measurement.max_gap > tolerance:
            caught.add(measurement.golden)
    return differs, caught


def assert_rejected_where_changed(
    what: str, other: Path, goldens: Sequence[tuple[str, GoldenRecord]], tolerance: float
) -> None:
    """The evidence a tolerance is held to on ``other``, a genuinely different model: some
    outputs changed, ``tolerance`` catches some of them, and never an unchanged one."""
    differs, caught = drift_on(other, goldens, tolerance)
    print(
        f"{what}: {len(differs)} of {len(goldens)} goldens' outputs differ; tolerance "
        f"{tolerance} catches {len(caught & differs)} of them ({sorted(differs - caught)} not "
        "caught)"
    )
    assert differs, f"{what} changed no output: the evidence needs another model"
    assert caught, "the recommended tolerance caught none of the changed outputs"
    assert caught <= differs  # an unchanged output is never rejected on the incremental path
