"""``smallmodel calibrate``: each model's goldens replayed under the benign runtime variants this
machine can run (``engine/variants.py``), judged by ``drift/calibration.py``; the report as data
(``CalibrationReport``), as text (``render``) and as JSON (``to_dict``).

This module never imports click; ``cli/__init__.py`` parses the options and prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.errors import GoldenError, SmallModelError
from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.drift.calibration import ModelCalibration, calibrate
from pytest_smallmodel.drift.rules import DEFAULT_TOLERANCE
from pytest_smallmodel.engine.variants import VariantReplayer
from pytest_smallmodel.goldens.file_format import parse_golden
from pytest_smallmodel.goldens.records import GoldenRecord
from pytest_smallmodel.pins.project import Project

if TYPE_CHECKING:  # handed in by the command: importing it here would lengthen every chain
    from pytest_smallmodel.engine.registry import ModelRegistry

# (model name, the goldens measured so far); called once per golden and load.
Progress = Callable[[int], Callable[[], None]]


@dataclass
class CalibrationReport:
    models: list[ModelCalibration] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # variants measured for at least one model
    unavailable: list[str] = field(default_factory=list)  # "variant: why" (once each)
    notes: list[str] = field(default_factory=list)  # goldens or models left out, one line each
    seconds: float = 0.0

    @property
    def measured(self) -> bool:
        return any(m.steps for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration_format": 1,
            "seconds": round(self.seconds, 2),
            "variants_ran": self.ran,
            "variants_unavailable": self.unavailable,
            "notes": self.notes,
            "models": [m.to_dict() for m in self.models],
        }


def read_goldens(
    golden_dir: Path, root: Path
) -> tuple[dict[str, list[tuple[str, GoldenRecord]]], list[str]]:
    """Every readable golden under ``golden_dir`` by model name, and a line per one left out."""
    by_model: dict[str, list[tuple[str, GoldenRecord]]] = {}
    notes: list[str] = []
    for path in sorted(Path(golden_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        name = _relative(path, root)
        try:
            record = parse_golden(path.read_text(encoding="utf-8"), path=name)
        except (OSError, UnicodeDecodeError) as error:
            notes.append(f"golden {name} cannot be read ({error}): skipped")
            continue
        except GoldenError as error:
            notes.append(f"{error}: skipped")
            continue
        if record.model is None or record.request is None:
            continue  # a plain value: nothing was asked of a model
        by_model.setdefault(record.model, []).append((name, record))
    return by_model, notes


def run_calibration(
    project: Project,
    registry: ModelRegistry,
    names: Sequence[str],
    *,
    progress: Progress | None = None,
    server: bool = True,
) -> CalibrationReport:
    """Calibrate ``names`` (every model with goldens when empty), loading through ``registry``'s
    pool one variant at a time (the caller closes the registry)."""
    started = time.perf_counter()
    report = CalibrationReport()
    golden_dir = project.root / project.options.golden_dir
    by_model, report.notes = read_goldens(golden_dir, project.root)
    wanted = list(names) or sorted(by_model)
    if not wanted:
        report.notes.append(
            f"no goldens under {_relative(golden_dir, project.root)}: nothing to calibrate "
            "(record some with pytest --snapshot-update)"
        )
    for name in wanted:
        goldens = _usable(name, by_model.get(name, []), registry, report.notes, golden_dir)
        if not goldens:
            continue
        spec = _load_spec(registry, name, report.notes)
        if spec is None:
            continue
        replayer = VariantReplayer(
            spec,
            registry.pool,
            progress=progress(len(goldens)) if progress else None,
            server=server,
        )
        measurements = replayer.replay(goldens)
        for unavailable in replayer.unavailable:
            line = f"{unavailable.describe()} (model {name})"
            if line not in report.unavailable:
                report.unavailable.append(line)
        report.ran += [v for v in replayer.ran if v not in report.ran]
        for m in measurements:
            if m.error is not None:
                report.notes.append(f"golden {m.golden} under {m.variant}: {m.error}")
        report.models.append(
            calibrate(name, goldens, measurements, current_tolerance=_tolerance_of(project, name))
        )
    report.seconds = time.perf_counter() - started
    return report


def _tolerance_of(project: Project, name: str) -> float:
    """The tolerance ``name``'s goldens are judged with today: its own, the project's, the
    default, in that order (as pytest's drift policy chooses without --smallmodel-tolerance)."""
    spec = project.models.get(name)
    for tolerance in (spec.tolerance if spec else None, project.options.tolerance):
        if tolerance is not None:
            return tolerance
    return DEFAULT_TOLERANCE


def _usable(
    name: str,
    goldens: Sequence[tuple[str, GoldenRecord]],
    registry: ModelRegistry,
    notes: list[str],
    golden_dir: Path,
) -> list[tuple[str, GoldenRecord]]:
    """The goldens of ``name`` that its pinned file can replay; a line for each other."""
    where = _relative(golden_dir, registry.project.root)
    if not goldens:
        notes.append(f"model {name!r}: no goldens under {where}: nothing to calibrate")
        return []
    locked = registry.lock.models.get(name)
    if locked is None:
        notes.append(
            f"model {name!r}: {len(goldens)} golden(s) name it but "
            f"{registry.project.lock_path.name} pins no such model: skipped (declare and lock "
            "it, or remove the goldens)"
        )
        return []
    usable = []
    for path, record in goldens:
        if record.sha256 != locked.sha256:
            notes.append(
                f"golden {path} was recorded with {record.model_ref}, the lock pins "
                f"{name}@{locked.short_sha}: skipped (`smallmodel compare` replays it on the "
                "new file)"
            )
        elif record.kind == "embedding":
            notes.append(
                f"golden {path} is an embedding, judged by cosine similarity: not calibrated"
            )
        else:
            usable.append((path, record))
    return usable


def _load_spec(registry: ModelRegistry, name: str, notes: list[str]) -> LoadSpec | None:
    try:
        return registry.base_spec(name)
    except SmallModelError as error:
        notes.append(f"model {name!r}: {str(error).splitlines()[0]}: skipped")
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


# -- rendering ----------------------------------------------------------------------------------


def render(report: CalibrationReport) -> list[str]:
    """The terminal report."""
    lines = [
        f"calibrated {sum(len(m.goldens) for m in report.models)} golden(s) of "
        f"{len(report.models)} model(s) in {report.seconds:.1f}s",
        "variants measured: " + (", ".join(report.ran) or "none"),
    ]
    if report.unavailable:
        lines.append("variants that could not run here:")
        lines += [f"  {line}" for line in report.unavailable]
    for model in report.models:
        lines += ["", *_model_lines(model)]
    if report.notes:
        lines += ["", "left out:"]
        lines += [f"  {note}" for note in report.notes]
    return lines


def _model_lines(model: ModelCalibration) -> list[str]:
    lines = [
        f"model {model.model}: {len(model.goldens)} golden(s), {model.steps} teacher-forced "
        "gap(s) over the variants",
        f"  largest gap of a golden token to the best token: max {model.max_gap:.4f}, "
        f"p99.9 {model.p999:.4f}, p99 {model.p99:.4f} nats",
    ]
    if model.worst is not None:
        where = f" step {model.worst.worst_step}" if model.worst.worst_step is not None else ""
        lines.append(f"  worst: {model.worst.golden}{where} under {model.worst.variant}")
    if model.identical_share is not None:
        lines.append(
            f"  identical output under every variant: {model.identical_share:.0%} of the goldens"
        )
    lines.append(
        f"  recommended tolerance: {model.recommended:.2f} nats (largest benign gap "
        f"{model.max_gap:.4f} x {model.safety_factor:g}, at least {model.floor:g}); "
        f"current {model.current_tolerance:.2f}"
    )
    failing = model.failing_now
    lines.append(
        f"  goldens that a benign variant moves beyond the current tolerance: {len(failing)}"
        + "".join(f"\n    {name}" for name in failing)
    )
    if model.fragile:
        lines.append(
            f"  fragile goldens (a near-tie below the benign noise, {model.max_gap:.4f} nats): "
            "shorten max_tokens before the step, change the prompt, or accept a looser tolerance"
        )
        for item in model.fragile:
            where = f"step {item.step}" if item.step is not None else "labels"
            top = " | ".join(f"{text!r} {logprob:.4f}" for text, logprob in item.top[:5])
            lines.append(f"    {item.golden} at {where}: margin {item.margin:.4f}; top: {top}")
    else:
        lines.append("  fragile goldens: none (every margin is above the benign noise)")
    return lines


def to_json(report: CalibrationReport) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)


__all__ = ["CalibrationReport", "read_goldens", "render", "run_calibration", "to_json"]
