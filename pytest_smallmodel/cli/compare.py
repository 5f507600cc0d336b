"""``smallmodel compare OLD NEW``: replay the requests stored in OLD's goldens on NEW and report.

Nothing of the test suite runs: every golden recorded with model ``OLD`` (name, optionally
``@sha256prefix``) holds its request (prompt or messages, settings, stop, max_tokens, schema,
labels); each is sent again through the public ``ModelHandle`` API to the locked model ``NEW``.
Prompts are always rendered again from their text or messages with NEW's tokenizer and chat
template, so a prompt whose stored token ids do not fit NEW is handled the same way; a case whose
ids changed says so.

The result is a ``CompareReport`` (data); ``markdown()``, ``to_dict()`` and ``html()`` render it.
This module never imports pytest, syrupy or click.
"""

from __future__ import annotations

import html
import json
import math
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.errors import ConfigError, EngineError, GoldenError
from pytest_smallmodel.common.results import Embedding, Generation, Label, Step
from pytest_smallmodel.drift import explanation
from pytest_smallmodel.drift.rules import DriftPolicy, compare, cosine_similarity, text_problem
from pytest_smallmodel.goldens.file_format import FORMAT_VERSION, parse_golden, serialize_record
from pytest_smallmodel.goldens.pending import PendingStore
from pytest_smallmodel.goldens.records import GoldenRecord, generation_of, record_of
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
        if record.model != old.name or record.request is None:
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


@dataclass(frozen=True)
class Divergence:
    """The first step where OLD's and NEW's tokens differ (``None`` tokens: that run ended)."""

    step: int
    old_token: str | None
    new_token: str | None
    old_margin: float | None  # golden run: OLD's token over NEW's token (stored top-k)
    new_margin: float | None  # this run: NEW's token over OLD's token (NEW's top-k)


@dataclass(frozen=True)
class CaseResult:
    golden: str
    kind: str
    identical: bool
    rerendered: bool = False
    error: str | None = None
    corrupt: bool = False  # the golden does not follow from its tokens: ``error`` says where
    old_text: str = ""
    new_text: str = ""
    divergence: Divergence | None = None
    step_gaps: tuple[float, ...] = ()
    old_steps: tuple[tuple[str, float], ...] = ()
    new_steps: tuple[tuple[str, float], ...] = ()
    old_label: str | None = None
    new_label: str | None = None
    old_label_logprobs: Mapping[str, float] | None = None
    new_label_logprobs: Mapping[str, float] | None = None
    fields_total: int = 0
    fields_agreeing: int = 0
    fields_changed: tuple[str, ...] = ()
    cosine: float | None = None
    generated_tokens: int = 0
    decode_seconds: float = 0.0


def _token_texts(steps: Sequence[Step]) -> tuple[tuple[str, float], ...]:
    return tuple((step.text, round(step.logprob, _DECIMALS)) for step in steps)


def _lookup(step: Step, token: int) -> float | None:
    return next((t.logprob for t in step.top if t.token == token), None)


def _gap(old: Step, new: Step) -> float | None:
    """Mean |logprob difference| over the tokens in both stored top-k lists of one step."""
    new_by_token = {t.token: t.logprob for t in new.top}
    shared = [abs(t.logprob - new_by_token[t.token]) for t in old.top if t.token in new_by_token]
    return round(sum(shared) / len(shared), _DECIMALS) if shared else None


def _generation_case(case: GoldenCase, live: Generation, rerendered: bool) -> CaseResult:
    old = case.record
    old_tokens, new_tokens = list(old.tokens), list(live.tokens)
    first = next(
        (i for i, (a, b) in enumerate(zip(old_tokens, new_tokens, strict=False)) if a != b),
        None if len(old_tokens) == len(new_tokens) else min(len(old_tokens), len(new_tokens)),
    )
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
            theirs = _lookup(old_at, new_at.token)
            ours = _lookup(new_at, old_at.token)
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
    request = dict(record.request or {})
    kind = request.get("kind")
    messages = request.get("messages")
    source: Any = messages if messages is not None else request.get("prompt", "")
    stop = request.get("stop")
    if kind == "generate":
        return handle.generate(str(request["prompt"]), max_tokens=request["max_tokens"], stop=stop)
    if kind == "chat":
        return handle.chat(source, max_tokens=request["max_tokens"], stop=stop)
    if kind == "extract":
        return handle.extract(source, request["schema"], max_tokens=request["max_tokens"])
    if kind == "classify":
        return handle.classify(source, request["labels"])
    if kind == "embed":
        return handle.embed(str(request["prompt"]))
    raise EngineError(f"golden request kind {kind!r} cannot be replayed")


def compare_case(case: GoldenCase, live: object) -> CaseResult:
    old = case.record
    generation = generation_of(live)
    if generation is not None:
        current = record_of(live)
        problem = text_problem(old, current, model=current.model_ref)
        if problem is not None:
            return CaseResult(
                golden=case.name,
                kind=old.kind,
                identical=False,
                error=f"golden {case.name} is corrupt: {problem}; restore it from version "
                "control or run `pytest --snapshot-update` with OLD",
                corrupt=True,
            )
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


@dataclass(frozen=True)
class Figures:
    cases: int
    identical: int
    errors: int
    labels: int
    labels_agreeing: int
    fields: int
    fields_agreeing: int
    extraction_cases: int
    divergence_steps: int
    divergence_mean: float | None
    divergence_max: float | None
    rerendered: int
    embeddings: int
    embedding_cosine_min: float | None
    new_tokens_per_second: float | None
    new_load_seconds: float
    new_peak_rss_mib: float

    @property
    def identical_share(self) -> float:
        return self.identical / self.cases if self.cases else 0.0


DIVERGENCE_NOTE = (
    "divergence: for each step whose prefix is the same in both runs (up to and including the "
    "first divergent step), the mean absolute difference of logprob over the tokens present in "
    "both runs' stored top-k lists; tokens outside either top-k are not counted, and OLD's "
    "logprobs are the golden's, rounded to 4 decimals. Mean over all such steps of all "
    "generations and extractions; largest single step."
)
OLD_FIGURES_NOTE = (
    "OLD's speed, load time and memory: goldens do not store them, so there is nothing to put "
    "beside NEW's figures."
)


@dataclass
class CompareReport:
    old: str
    new: str
    new_sha256: str
    cases: list[CaseResult]
    figures: Figures
    skipped: list[str] = field(default_factory=list)
    pending_written: list[str] = field(default_factory=list)

    @property
    def unusable(self) -> list[str]:
        """Goldens that could not be read or do not follow from their tokens: the comparison
        cannot vouch for them, so it fails (exit 1) after reporting."""
        return [*self.skipped, *(case.error or "" for case in self.cases if case.corrupt)]

    # -- renderings -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "new_sha256": self.new_sha256,
            "figures": {**asdict(self.figures), "identical_share": self.figures.identical_share},
            "notes": [DIVERGENCE_NOTE, OLD_FIGURES_NOTE],
            "cases": [_plain(asdict(case)) for case in self.cases],
            "skipped_goldens": self.skipped,
            "pending_written": self.pending_written,
        }

    def markdown(self) -> str:
        f = self.figures
        out = [
            f"# smallmodel compare {self.old} -> {self.new}",
            "",
            f"NEW is `{self.new}@{self.new_sha256[:8]}`. {f.cases} golden(s) replayed.",
            "",
            "| figure | value |",
            "| --- | --- |",
            f"| identical outputs | {f.identical}/{f.cases} ({100 * f.identical_share:.1f} %) |",
        ]
        if f.labels:
            out.append(f"| label agreement | {f.labels_agreeing}/{f.labels} |")
        if f.extraction_cases:
            out.append(f"| extraction field agreement | {f.fields_agreeing}/{f.fields} |")
        if f.divergence_steps:
            out.append(
                f"| divergence, mean / largest (nats, {f.divergence_steps} steps) | "
                f"{f.divergence_mean:.4f} / {f.divergence_max:.4f} |"
            )
        if f.embeddings:
            out.append(
                f"| embeddings, lowest cosine similarity | {f.embeddings}, "
                f"{_num(f.embedding_cosine_min)} |"
            )
        if f.rerendered:
            out.append(f"| prompts re-tokenized differently by NEW | {f.rerendered} |")
        if f.errors:
            out.append(f"| replays that failed | {f.errors} |")
        speed = "n/a" if f.new_tokens_per_second is None else f"{f.new_tokens_per_second:.1f}"
        out += [
            f"| NEW tokens per second (OLD: not stored) | {speed} |",
            f"| NEW verify + load time, s (OLD: not stored) | {f.new_load_seconds:.2f} |",
            f"| peak memory of this process, MiB (OLD: not stored) | {f.new_peak_rss_mib:.0f} |",
            "",
            f"_{DIVERGENCE_NOTE}_",
            "",
            f"_{OLD_FIGURES_NOTE}_",
            "",
            "## Goldens",
            "",
        ]
        for case in self.cases:
            out.append(f"- `{case.golden}` ({case.kind}): {_case_line(case)}")
        if self.skipped:
            out += ["", "## Goldens that could not be read", ""]
            out += [f"- {line}" for line in self.skipped]
        if self.pending_written:
            out += [
                "",
                f"{len(self.pending_written)} pending golden(s) written: finish the switch with "
                "`smallmodel review`.",
            ]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        f = self.figures
        rows = []
        for case in self.cases:
            diverged = case.divergence.step if case.divergence else None
            old_cell = _html_tokens(case.old_steps, diverged) or _html_text(case.old_text)
            new_cell = _html_tokens(case.new_steps, diverged) or _html_text(case.new_text)
            rows.append(
                f"<tr><td><code>{html.escape(case.golden)}</code><br>{html.escape(case.kind)}"
                f"<br><b>{html.escape(_case_line(case))}</b></td>"
                f"<td>{old_cell}</td><td>{new_cell}</td></tr>"
            )
        summary = html.escape(
            f"{f.identical}/{f.cases} identical ({100 * f.identical_share:.1f} %); "
            f"labels {f.labels_agreeing}/{f.labels}; extraction fields "
            f"{f.fields_agreeing}/{f.fields}; divergence mean "
            f"{_num(f.divergence_mean)}, largest {_num(f.divergence_max)}"
        )
        title = html.escape(f"smallmodel compare {self.old} -> {self.new}")
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>"
            "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;width:100%}"
            "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
            ".t{white-space:pre-wrap;font-family:monospace}"
            ".d{outline:2px solid #d00;font-weight:bold}.after{opacity:.7}"
            "</style></head><body>"
            f"<h1>{title}</h1><p>{summary}</p>"
            f"<p><small>{html.escape(DIVERGENCE_NOTE)} Tokens are shaded by probability "
            "(darker: more likely); the first divergent token is outlined in red.</small></p>"
            "<table><tr><th>golden</th><th>OLD (golden)</th><th>NEW</th></tr>"
            + "".join(rows)
            + "</table></body></html>\n"
        )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _html_text(text: str) -> str:
    return f"<span class='t'>{html.escape(text)}</span>"


def _html_tokens(steps: Sequence[tuple[str, float]], diverged: int | None) -> str:
    spans = []
    for index, (text, logprob) in enumerate(steps):
        probability = math.exp(logprob) if math.isfinite(logprob) else 0.0
        classes = "t"
        if diverged is not None and index == diverged:
            classes += " d"
        elif diverged is not None and index > diverged:
            classes += " after"
        spans.append(
            f"<span class='{classes}' title='logprob {logprob:.4f}' style='background:"
            f"rgba(40,110,220,{0.08 + 0.5 * probability:.3f})'>{html.escape(text)}</span>"
        )
    return "".join(spans)


def _case_line(case: CaseResult) -> str:
    if case.error:
        return f"replay failed: {case.error}"
    parts = []
    if case.identical:
        parts.append("identical")
    elif case.divergence is not None:
        d = case.divergence
        parts.append(
            f"diverges at step {d.step}: OLD {d.old_token!r} vs NEW {d.new_token!r} "
            f"(margin in OLD's run {_num(d.old_margin)}, in NEW's run {_num(d.new_margin)})"
        )
    elif case.old_label is not None:
        old_lp = (case.old_label_logprobs or {}).get(case.old_label)
        new_lp = (case.new_label_logprobs or {}).get(case.new_label or "")
        parts.append(
            f"label flips {case.old_label!r} (logprob {_num(old_lp)} in OLD) -> "
            f"{case.new_label!r} (logprob {_num(new_lp)} in NEW)"
        )
    else:
        parts.append("differs")
    if case.fields_changed:
        parts.append(
            f"{len(case.fields_changed)} of {case.fields_total} fields changed: "
            + ", ".join(case.fields_changed)
        )
    if case.cosine is not None:
        parts.append(f"cosine {case.cosine:.6f}")
    if case.rerendered:
        parts.append("prompt re-tokenized by NEW (token ids differ from the golden's)")
    return "; ".join(parts)


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
) -> CompareReport:
    """Replay OLD's goldens on NEW; with ``pending``, write NEW's results as pending goldens."""
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
    written: list[str] = []
    load_seconds = 0.0
    for case in cases:
        overrides = dict((case.record.request or {}).get("settings", {}))
        started = time.perf_counter()
        handle = registry.handle(new, overrides, where=f"{case.name} (request settings)")
        load_seconds += time.perf_counter() - started
        try:
            live = replay(handle, case.record)
        except EngineError as error:
            results.append(
                CaseResult(
                    golden=case.name, kind=case.record.kind, identical=False, error=str(error)
                )
            )
            continue
        results.append(compare_case(case, live))
        if pending is not None:
            text = serialize_record(record_of(live))
            if case.path.read_text(encoding="utf-8") != text:
                verdict = compare(
                    case.record, live, policy=policy or DriftPolicy(), golden_path=case.name
                )
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
    figures = figures_of(results, load_seconds=load_seconds, peak_rss_mib=peak_rss_mib())
    return CompareReport(
        old=str(old),
        new=str(new),
        new_sha256=locked.sha256,
        cases=results,
        figures=figures,
        skipped=skipped,
        pending_written=written,
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
