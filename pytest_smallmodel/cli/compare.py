"""``smallmodel compare OLD NEW``: replay the requests stored in OLD's goldens on NEW and report.

Nothing of the test suite runs: every golden recorded with model ``OLD`` (name, optionally
``@sha256prefix``) holds its request (prompt or messages, settings, stop, max_tokens, schema,
labels); each is sent again through the public ``ModelHandle`` API to the locked model ``NEW``.
Prompts are always rendered again from their text or messages with NEW's tokenizer and chat
template, so a prompt whose stored token ids do not fit NEW is handled the same way; a case whose
ids changed says so.

The result is a ``CompareReport`` (data); ``compare_render`` renders it (Markdown, HTML, JSON).
This module never imports pytest, syrupy or click.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.cli.compare_accuracy import (
    Meter,
    compare_accuracy,
    gates,
    stored_calls,
)
from pytest_smallmodel.cli.compare_report import (
    AccuracyComparison,
    CaseResult,
    CompareReport,
    Divergence,
    Figures,
)
from pytest_smallmodel.common.errors import ConfigError, EngineError, GoldenError, SmallModelError
from pytest_smallmodel.common.progress import progress
from pytest_smallmodel.common.results import Embedding, Generation, Label, Step
from pytest_smallmodel.drift import explanation
from pytest_smallmodel.drift.kinds import replay_request
from pytest_smallmodel.drift.rules import (
    DriftPolicy,
    compare,
    cosine_similarity,
    first_difference,
    logprob_of,
)
from pytest_smallmodel.drift.verdict import Reason, Verdict
from pytest_smallmodel.goldens.file_format import FORMAT_VERSION, parse_golden, serialize_record
from pytest_smallmodel.goldens.kinds import record_of
from pytest_smallmodel.goldens.pending import PendingStore
from pytest_smallmodel.goldens.records import GoldenRecord
from pytest_smallmodel.pins.lockfile import LockedModel

if TYPE_CHECKING:
    # The caller (``smallmodel compare``) builds the registry and the references.
    from pytest_smallmodel.engine.handle import ModelHandle
    from pytest_smallmodel.engine.registry import ModelReference, ModelRegistry

_DECIMALS = 4


# -- finding OLD's goldens ----------------------------------------------------------------------


@dataclass(frozen=True)
class GoldenCase:
    path: Path  # absolute
    name: str  # relative to the project root, for reports
    record: GoldenRecord


def find_goldens(
    golden_dir: Path, root: Path, old: ModelReference
) -> tuple[list[GoldenCase], list[str]]:
    """OLD's goldens under ``golden_dir``, and one line per golden that could not be read.

    A golden of a newer format is an error (this version cannot know what it holds); other
    unreadable goldens are skipped and listed.
    """
    cases: list[GoldenCase] = []
    skipped: list[str] = []
    inside = Path(golden_dir).resolve()
    for path in sorted(Path(golden_dir).rglob("*.json")):
        if path.name.startswith("."):
            continue
        name = _relative(path, root)
        if not path.resolve().is_relative_to(inside):
            # --update would write its pending result for a file outside golden_dir
            skipped.append(
                f"golden {name} is a link to {path.resolve()}, outside {_relative(inside, root)}: "
                "skipped (make it a regular file inside the golden directory)"
            )
            continue
        try:
            text = path.read_bytes().decode("utf-8", "surrogateescape")
        except OSError as error:
            skipped.append(
                f"golden {name} cannot be read ({error.strerror or error}): check its permissions"
            )
            continue
        try:
            record = parse_golden(text, path=name)
        except GoldenError as error:
            version = _format_version(text)
            if version is not None and version > FORMAT_VERSION:
                raise GoldenError(
                    f"golden {name} has golden_format {version}, newer than this "
                    f"pytest-smallmodel reads ({FORMAT_VERSION}): upgrade pytest-smallmodel to "
                    "compare it"
                ) from None
            skipped.append(str(error))
            continue
        if record.model != old.name or (record.request is None and record.evaluation is None):
            continue
        if old.sha_prefix is not None and not (record.sha256 or "").startswith(old.sha_prefix):
            continue
        cases.append(GoldenCase(path, name, record))
    return cases, skipped


def _format_version(text: str) -> int | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    version = data.get("golden_format") if isinstance(data, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


# -- one case -----------------------------------------------------------------------------------


def _token_texts(steps: Sequence[Step]) -> tuple[tuple[str, float], ...]:
    return tuple((step.text, round(step.logprob, _DECIMALS)) for step in steps)


def _gap(old: Step, new: Step) -> float | None:
    """Mean |logprob difference| over the tokens in both stored top-k lists of one step."""
    new_by_token = {t.token: t.logprob for t in new.top}
    shared = [abs(t.logprob - new_by_token[t.token]) for t in old.top if t.token in new_by_token]
    return round(sum(shared) / len(shared), _DECIMALS) if shared else None


def _generation_case(case: GoldenCase, live: Generation, rerendered: bool) -> CaseResult:
    old = case.record
    old_tokens, new_tokens = list(old.tokens), list(live.tokens)
    first = first_difference(old_tokens, new_tokens)
    # Only steps whose prefixes are equal in both runs compare like for like: up to and
    # including the first divergent step.
    aligned = len(old_tokens) if first is None else first + 1
    gaps = []
    for old_step, new_step in zip(old.steps[:aligned], live.steps[:aligned], strict=False):
        gap = _gap(old_step, new_step)
        if gap is not None:
            gaps.append(gap)
    divergence = None
    if first is not None:
        old_at = old.steps[first] if first < len(old.steps) else None
        new_at = live.steps[first] if first < len(live.steps) else None
        old_margin = new_margin = None
        if old_at is not None and new_at is not None:
            theirs = logprob_of(old_at.top, new_at.token)
            ours = logprob_of(new_at.top, old_at.token)
            old_margin = None if theirs is None else round(old_at.logprob - theirs, _DECIMALS)
            new_margin = None if ours is None else round(new_at.logprob - ours, _DECIMALS)
        divergence = Divergence(
            first,
            old_at.text if old_at else None,
            new_at.text if new_at else None,
            old_margin,
            new_margin,
        )
    result = CaseResult(
        golden=case.name,
        kind=old.kind,
        identical=first is None,
        rerendered=rerendered,
        old_text=old.text or "",
        new_text=str(live),
        divergence=divergence,
        step_gaps=tuple(gaps),
        old_steps=_token_texts(old.steps),
        new_steps=_token_texts(live.steps),
        generated_tokens=live.timings.generated_tokens,
        decode_seconds=live.timings.decode_ms / 1000,
    )
    if old.kind != "extraction":
        return result
    total, agreeing, changed = _field_changes(_json_or_none(old.text), _json_or_none(str(live)))
    return replace(result, fields_total=total, fields_agreeing=agreeing, fields_changed=changed)


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        return None


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{path}/{key}"))
        return out or {path or "/": {}}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_leaves(item, f"{path}/{index}"))
        return out or {path or "/": []}
    return {path or "/": value}


def _field_changes(old: Any, new: Any) -> tuple[int, int, tuple[str, ...]]:
    """OLD's leaf fields (JSON pointers), how many NEW kept equal, and every changed path."""
    old_leaves, new_leaves = _leaves(old), _leaves(new)
    changed = sorted(
        path
        for path in set(old_leaves) | set(new_leaves)
        if old_leaves.get(path, _MISSING) != new_leaves.get(path, _MISSING)
    )
    agreeing = sum(1 for path in old_leaves if path not in changed)
    return len(old_leaves), agreeing, tuple(changed)


_MISSING = object()


def replay(handle: ModelHandle, record: GoldenRecord) -> object:
    """Send the stored request to ``handle``; returns the live result."""
    return replay_request(handle, record)


def compare_case(case: GoldenCase, live: object, verdict: Verdict) -> CaseResult:
    """NEW's result beside OLD's golden; ``verdict`` is drift's decision on the pair (the one
    --update's pending golden carries), which also finds a golden that does not follow from
    its tokens."""
    old = case.record
    if verdict.reason is Reason.CORRUPT:
        return CaseResult(
            golden=case.name,
            kind=old.kind,
            identical=False,
            error=f"golden {case.name} is corrupt: {verdict.problem}; restore it from version "
            "control or run `pytest --snapshot-update` with OLD",
            corrupt=True,
            verdict=verdict,
        )
    return replace(_compared(case, live), verdict=verdict)


def _compared(case: GoldenCase, live: object) -> CaseResult:
    old = case.record
    rerendered = list((old.request or {}).get("prompt_tokens", [])) != list(
        (record_of(live).request or {}).get("prompt_tokens", [])
    )
    if isinstance(live, Generation):
        return _generation_case(case, live, rerendered)
    generation = getattr(live, "generation", None)
    if isinstance(generation, Generation):  # an extraction
        return _generation_case(case, generation, rerendered)
    if isinstance(live, Label):
        return CaseResult(
            golden=case.name,
            kind=old.kind,
            identical=str(live) == old.label,
            rerendered=rerendered,
            old_text=old.label or "",
            new_text=str(live),
            old_label=old.label,
            new_label=str(live),
            old_label_logprobs=dict(old.label_logprobs or {}),
            new_label_logprobs={k: round(v, _DECIMALS) for k, v in live.logprobs.items()},
        )
    if isinstance(live, Embedding):
        vector = [float(x) for x in live]
        return CaseResult(
            golden=case.name,
            kind=old.kind,
            identical=list(old.vector or ()) == vector,
            rerendered=rerendered,
            cosine=round(cosine_similarity(old.vector or (), vector), 6),
        )
    raise EngineError(f"{case.name}: cannot compare a {type(live).__name__}")


# -- the suite ----------------------------------------------------------------------------------


def figures_of(cases: Sequence[CaseResult], *, load_seconds: float, peak_rss_mib: float) -> Figures:
    labels = [c for c in cases if c.old_label is not None]
    extractions = [c for c in cases if c.kind == "extraction" and not c.error]
    gaps = [gap for c in cases for gap in c.step_gaps]
    tokens = sum(c.generated_tokens for c in cases)
    seconds = sum(c.decode_seconds for c in cases)
    fields = sum(c.fields_total for c in extractions)
    cosines = [c.cosine for c in cases if c.cosine is not None]
    return Figures(
        cases=len(cases),
        identical=sum(1 for c in cases if c.identical),
        errors=sum(1 for c in cases if c.error),
        labels=len(labels),
        labels_agreeing=sum(1 for c in labels if c.identical),
        fields=fields,
        fields_agreeing=sum(c.fields_agreeing for c in extractions),
        extraction_cases=len(extractions),
        divergence_steps=len(gaps),
        divergence_mean=round(sum(gaps) / len(gaps), _DECIMALS) if gaps else None,
        divergence_max=max(gaps) if gaps else None,
        rerendered=sum(1 for c in cases if c.rerendered),
        embeddings=len(cosines),
        embedding_cosine_min=min(cosines) if cosines else None,
        new_tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else None,
        new_load_seconds=round(load_seconds, 3),
        new_peak_rss_mib=peak_rss_mib,
    )


def peak_rss_mib() -> float:
    """Peak resident memory of this process or of any finished child (a model worker), MiB."""
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) * scale, 1)


def run_compare(
    registry: ModelRegistry,
    *,
    golden_dir: Path,
    old: ModelReference,
    new: ModelReference,
    pending: PendingStore | None = None,
    policy: DriftPolicy | None = None,
    fail_under: float | None = None,
    fail_if_worse: bool = False,
) -> CompareReport:
    """Replay OLD's goldens on NEW (and on OLD, to measure it, when its file is present); with
    ``pending``, write NEW's results as pending goldens. Evaluation goldens are scored against
    their expected values and the gates decided on them."""
    lock = registry.lock
    for reference in (old, new):
        if reference.name not in lock.models:
            known = ", ".join(sorted(lock.models)) or "(none)"
            declared = reference.name in registry.project.models
            fix = (
                f"Run `smallmodel lock {reference.name}` and commit "
                f"{registry.project.lock_path.name}"
                if declared
                else f"Locked models: {known}"
            )
            raise ConfigError(
                f"{'model' if declared else 'unknown model'} {reference.name!r}: not in "
                f"{registry.project.lock_path.name}"
                f"{' (declared in pyproject.toml, not locked yet)' if declared else ''}. {fix}"
            )
    locked: LockedModel = registry.resolve(new)
    root = registry.project.root
    cases, skipped = find_goldens(golden_dir, root, old)
    if not cases:
        unusable = "".join(f"\n  {line}" for line in skipped)
        raise NoGoldens(
            f"no goldens recorded with {old} under {_relative(Path(golden_dir), root)}: nothing "
            "to compare (goldens name their model in the 'model' and 'sha256' fields)"
            + (f"; {len(skipped)} golden(s) could not be used:{unusable}" if skipped else "")
        )
    results: list[CaseResult] = []
    accuracy: list[AccuracyComparison] = []
    written: list[str] = []
    meter = Meter(send=replay)
    for case in progress(cases, what="goldens replayed on NEW"):
        if case.record.evaluation is not None:
            accuracy.append(
                compare_accuracy(case.name, case.record, _on(registry, new, meter, case))
            )
            continue
        handle = _handle(meter, registry, new, case.record, case.name)
        try:
            live = meter.replay(handle, case.record)
        except EngineError as error:
            results.append(
                CaseResult(
                    golden=case.name, kind=case.record.kind, identical=False, error=str(error)
                )
            )
            continue
        verdict = compare(case.record, live, policy=policy or DriftPolicy(), golden_path=case.name)
        results.append(compare_case(case, live, verdict))
        if pending is not None:
            text = serialize_record(record_of(live))
            if case.path.read_text(encoding="utf-8") != text:
                target = pending.write(
                    case.path,
                    text,
                    test=f"smallmodel compare {old} {new}",
                    outcome=verdict.outcome.value,
                    headline=explanation.headline(verdict),
                    report=explanation.lines(verdict),
                )
                if target is not None:
                    written.append(_relative(target, root))
    figures = figures_of(results, load_seconds=meter.load_seconds, peak_rss_mib=peak_rss_mib())
    figures = _side_by_side(figures, new=meter, old=_measure_old(registry, old, cases))
    return CompareReport(
        old=str(old),
        new=str(new),
        new_sha256=locked.sha256,
        cases=results,
        figures=figures,
        skipped=skipped,
        pending_written=written,
        accuracy=accuracy,
        gates=gates(accuracy, fail_under=fail_under, fail_if_worse=fail_if_worse),
    )


def _on(
    registry: ModelRegistry, reference: ModelReference, meter: Meter, case: GoldenCase
) -> Callable[[GoldenRecord], object]:
    """Replaying one stored call of ``case`` on ``reference``, timed by ``meter``."""

    def run(call: GoldenRecord) -> object:
        return meter.replay(_handle(meter, registry, reference, call, case.name), call)

    return run


def _handle(
    meter: Meter,
    registry: ModelRegistry,
    reference: ModelReference,
    record: GoldenRecord,
    where: str,
) -> ModelHandle:
    """The handle ``record``'s request is replayed through, its loading timed by ``meter``."""
    overrides = dict((record.request or {}).get("settings", {}))
    started = time.perf_counter()
    handle = registry.handle(reference, overrides, where=f"{where} (request settings)")
    meter.opened(started)
    return handle


def old_unavailable(
    registry: ModelRegistry, old: ModelReference, records: Iterable[GoldenRecord]
) -> str | None:
    """Why OLD cannot be run (None: its pinned file is present and its goldens' file)."""
    locked = registry.lock.models.get(old.name)
    digests = {record.sha256 for record in records}
    if locked is None or digests != {locked.sha256}:
        pinned = f"pins {locked.sha256[:8]}" if locked is not None else "does not pin it"
        held = ", ".join(sorted((d or "?")[:8] for d in digests))
        return (
            f"OLD's goldens hold {old.name}@{held} and models.lock {pinned}: OLD's file is not "
            "pinned, so nothing measured it"
        )
    try:
        registry.verified_path(locked)
    except SmallModelError as error:
        return f"OLD's file is not available ({error})"
    return None


def _measure_old(
    registry: ModelRegistry, old: ModelReference, cases: Sequence[GoldenCase]
) -> Meter | str:
    """OLD's figures from replaying the same requests on it, or why it could not be run."""
    reason = old_unavailable(registry, old, (case.record for case in cases))
    if reason is not None:
        return reason
    meter = Meter(send=replay)
    for case in progress(cases, what="goldens replayed on OLD"):
        for call in stored_calls(case.record):
            try:
                meter.replay(_handle(meter, registry, old, call, case.name), call)
            except EngineError:
                continue  # NEW's replay reports its failure; OLD is only timed here
    return meter


def _side_by_side(figures: Figures, *, new: Meter, old: Meter | str) -> Figures:
    measured = new.figures()
    figures = replace(
        figures,
        new_tokens_per_second=measured["tokens_per_second"],
        new_latency_p50_ms=measured["latency_p50_ms"],
        new_latency_p95_ms=measured["latency_p95_ms"],
        new_peak_rss_mib=measured["peak_rss_mib"] or figures.new_peak_rss_mib,
        peak_memory="worker" if measured["peak_rss_mib"] is not None else "process",
    )
    if isinstance(old, str):
        return replace(figures, old_not_measured=old)
    before = old.figures()
    return replace(
        figures,
        old_tokens_per_second=before["tokens_per_second"],
        old_load_seconds=before["load_seconds"],
        old_peak_rss_mib=before["peak_rss_mib"],
        old_latency_p50_ms=before["latency_p50_ms"],
        old_latency_p95_ms=before["latency_p95_ms"],
    )


class NoGoldens(GoldenError):
    """No golden was recorded with OLD (a failed check: exit 1)."""


__all__ = [
    "CaseResult",
    "CompareReport",
    "Divergence",
    "Figures",
    "GoldenCase",
    "NoGoldens",
    "compare_case",
    "figures_of",
    "find_goldens",
    "peak_rss_mib",
    "replay",
    "run_compare",
]
