"""Deciding whether a result still matches its golden, and explaining why not.

The rules depend on what changed since the golden was recorded (docs/drift.md):

1. the model file (sha256) changed: fail, the outputs need a human review;
2. the test's input changed (prompt text or chat messages, settings, stop, max_tokens, schema,
   labels): fail with a diff of the request and of the output;
3. nothing changed, not even the environment fingerprint: the output must be identical;
4. only the environment changed (runtime, build, CPU features, GPU, or the tokenizer's ids for an
   unchanged prompt): equal outputs pass; diverging outputs pass only if, teacher-forcing the
   golden tokens on the live model, every golden token stays within ``tolerance`` nats of the
   best token. ``strict`` turns this case into rule 3.

This module is pure: no pytest, no syrupy. ``golden.py`` adapts it to syrupy.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pytest_smallmodel.atomic import atomic_write_text
from pytest_smallmodel.fingerprint import differences
from pytest_smallmodel.results import (
    BatchedCheck,
    Embedding,
    ExtractedDict,
    ExtractedList,
    Generation,
    Label,
    ScoredStep,
    Step,
    TokenLogprob,
)
from pytest_smallmodel.settings import IMPLICIT_SETTINGS

# Teacher-forced gaps measured on SmolLM2 Q4_1 (docs/drift.md): max 0.239 nats across two builds
# (1,654 steps), 0.356 with flash attention toggled and 0.494 with an f32 KV cache (753 steps
# each). 1.0 is twice the largest, so long suites do not trip on the tail; a golden token within
# it keeps at least exp(-1) = 37 % of the best token's probability, while a changed prompt puts
# golden tokens several nats below the best.
DEFAULT_TOLERANCE = 1.0
# Measured 1 - cosine: 1.4e-4 (f32 KV cache) and 2.1e-4 (flash attention); different texts scored
# at most 0.88. 0.999 leaves 5x headroom over the noise and is far above any change of meaning.
DEFAULT_EMBEDDING_MIN_COSINE = 0.999
# Logprobs are stored rounded: enough for reports, and it keeps goldens short and stable.
LOGPROB_DECIMALS = 4
SHORT_SHA_LENGTH = 7
# How many steps above tolerance a report lists before summarising the rest.
_WORST_STEPS_SHOWN = 5

GoldenKind = Literal["generation", "extraction", "label", "embedding", "text", "value"]


class Outcome(StrEnum):
    IDENTICAL = "identical"
    IDENTICAL_NEW_FINGERPRINT = "identical under a changed fingerprint"
    TOLERATED = "passed within tolerance"
    REWRITTEN = "rewritten by --snapshot-update"
    MODEL_CHANGED = "model changed"
    REQUEST_CHANGED = "request changed"
    DRIFT = "drift"
    MISMATCH = "mismatch"
    CORRUPT = "corrupt golden"
    MISSING = "missing golden"
    WRITE_FAILED = "golden not written"


@dataclass(frozen=True)
class DriftPolicy:
    """How strictly results are compared with goldens recorded under another fingerprint."""

    tolerance: float = DEFAULT_TOLERANCE
    strict: bool = False
    embedding_min_cosine: float = DEFAULT_EMBEDDING_MIN_COSINE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(
                f"tolerance must be a non-negative number of nats, got {self.tolerance}"
            )
        if not (-1.0 <= self.embedding_min_cosine <= 1.0):
            raise ValueError(
                f"embedding_min_cosine must be within [-1, 1], got {self.embedding_min_cosine}"
            )


@dataclass(frozen=True)
class GoldenRecord:
    """What a golden file holds (or a live result would write), independent of the file format."""

    kind: GoldenKind
    model: str | None = None
    sha256: str | None = None
    request: Mapping[str, Any] | None = None
    text: str | None = None
    tokens: tuple[int, ...] = ()
    finish_reason: str | None = None
    steps: tuple[Step, ...] = ()
    label: str | None = None
    label_logprobs: Mapping[str, float] | None = None
    vector: tuple[float, ...] | None = None
    value: Any = None
    fingerprint: Mapping[str, Any] | None = None

    @property
    def model_ref(self) -> str:
        return model_ref(self.model, self.sha256)


def model_ref(name: str | None, sha256: str | None) -> str:
    return f"{name or '?'}@{(sha256 or '?')[:SHORT_SHA_LENGTH]}"


def round_logprob(value: float) -> float:
    if not math.isfinite(value):
        return value
    rounded = round(value, LOGPROB_DECIMALS)
    return 0.0 if rounded == 0 else rounded  # no "-0.0" in goldens


def _json_normal(value: Any) -> Any:
    """The value as read back from a JSON file (tuples become lists): comparisons stay fair."""
    return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))


def _rounded_step(step: Step) -> Step:
    return Step(
        step.token,
        step.text,
        round_logprob(step.logprob),
        tuple(TokenLogprob(t.token, t.text, round_logprob(t.logprob)) for t in step.top),
    )


def check_plain(value: Any, where: str = "value") -> None:
    """Raise TypeError naming the offending path unless ``value`` survives a JSON round trip."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"golden cannot store {where} = {value!r}: not a finite number")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"golden cannot store {where}: key {key!r} is not a string (JSON keys are)"
                )
            check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"golden cannot store {where} of type {type(value).__name__}: assert a model result, "
        "or a str, number, bool, None, list or dict of those"
    )


def record_of(value: object) -> GoldenRecord:
    """The golden record a live result (or a plain value) would be stored as."""
    if isinstance(value, ExtractedDict | ExtractedList):
        return _generation_record(value.generation, kind="extraction")
    if isinstance(value, Generation):
        return _generation_record(value, kind="generation")
    if isinstance(value, Label):
        provenance = value.provenance
        labels = provenance.request.labels or tuple(value.logprobs)
        return GoldenRecord(
            kind="label",
            model=provenance.model,
            sha256=provenance.sha256,
            request=_json_normal(provenance.request.as_record()),
            label=value.label,
            label_logprobs={
                name: round_logprob(value.logprobs[name])
                for name in labels
                if name in value.logprobs
            },
            fingerprint=_json_normal(provenance.fingerprint),
        )
    if isinstance(value, Embedding):
        provenance = value.provenance
        return GoldenRecord(
            kind="embedding",
            model=provenance.model,
            sha256=provenance.sha256,
            request=_json_normal(provenance.request.as_record()),
            vector=tuple(float(x) for x in value),
            fingerprint=_json_normal(provenance.fingerprint),
        )
    if isinstance(value, str):
        return GoldenRecord(kind="text", text=str.__str__(value))
    check_plain(value)
    return GoldenRecord(kind="value", value=_json_normal(value))


def _generation_record(generation: Generation, *, kind: GoldenKind) -> GoldenRecord:
    provenance = generation.provenance
    return GoldenRecord(
        kind=kind,
        model=provenance.model,
        sha256=provenance.sha256,
        request=_json_normal(provenance.request.as_record()),
        text=generation.text,
        tokens=tuple(generation.tokens),
        finish_reason=generation.finish_reason,
        steps=tuple(_rounded_step(step) for step in generation.steps),
        fingerprint=_json_normal(provenance.fingerprint),
    )


# -- verdicts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    """One fingerprint field (or pseudo-field) that differs, as text for reports."""

    path: str
    old: str
    new: str

    def describe(self) -> str:
        return f"{self.path}: {self.old} -> {self.new}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one golden comparison, with everything a reviewer needs to decide."""

    outcome: Outcome
    passed: bool
    golden_path: str
    headline: str
    lines: tuple[str, ...]
    changed: tuple[FieldChange, ...] = ()
    model: str | None = None

    @property
    def explanation(self) -> str:
        return "\n".join(self.lines)


def corrupt_verdict(golden_path: str, problem: str) -> Verdict:
    headline = f"golden {golden_path} cannot be used: {problem}"
    return Verdict(
        outcome=Outcome.CORRUPT,
        passed=False,
        golden_path=golden_path,
        headline=headline,
        lines=(headline, "run `pytest --snapshot-update` to replace it with this run's result"),
    )


def missing_verdict(golden_path: str) -> Verdict:
    headline = f"no golden at {golden_path}: run `pytest --snapshot-update` to record it"
    return Verdict(
        outcome=Outcome.MISSING,
        passed=False,
        golden_path=golden_path,
        headline=headline,
        lines=(headline,),
    )


def compare(
    golden: GoldenRecord, live: object, *, policy: DriftPolicy, golden_path: str
) -> Verdict:
    """Apply rules 1-4 to a parsed golden and the live result the test asserted."""
    return _Comparison(golden, live, policy, golden_path).run()


@dataclass
class _Comparison:
    golden: GoldenRecord
    live: object
    policy: DriftPolicy
    golden_path: str
    current: GoldenRecord = field(init=False)
    changed: tuple[FieldChange, ...] = field(init=False, default=())
    notes: list[str] = field(init=False, default_factory=list)
    fingerprint_checked: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.current = record_of(self.live)

    # -- top level ------------------------------------------------------------------------------

    def run(self) -> Verdict:
        golden, current = self.golden, self.current
        if golden.kind != current.kind:
            return self._fail(
                Outcome.REQUEST_CHANGED,
                f"the golden holds a {golden.kind} but the test now asserts a {current.kind}: "
                "review and run --snapshot-update",
                self._output_diff(),
            )
        if golden.kind in ("text", "value"):
            return self._compare_plain()
        if golden.sha256 != current.sha256:
            return self._fail(
                Outcome.MODEL_CHANGED,
                f"golden recorded with {golden.model_ref}, this run uses {current.model_ref}: "
                "review the outputs and run --snapshot-update",
                self._output_diff(),
            )
        request_lines = self._request_change_lines()
        if request_lines:
            return self._fail(
                Outcome.REQUEST_CHANGED,
                "the test's input changed since the golden was recorded: "
                "review the request and output diffs, then run --snapshot-update",
                [*request_lines, *self._output_diff()],
            )
        self.changed = self._fingerprint_changes()
        self.fingerprint_checked = True
        if golden.kind in ("generation", "extraction"):
            return self._compare_tokens()
        if golden.kind == "label":
            return self._compare_label()
        return self._compare_embedding()

    @property
    def tolerant(self) -> bool:
        return bool(self.changed) and not self.policy.strict

    def _mode(self) -> str:
        if not self.changed:
            return "exact (same model, request and fingerprint: identical output required)"
        if self.policy.strict:
            return "strict (--smallmodel-strict: identical output required)"
        return f"tolerance {_nats(self.policy.tolerance)} nats (the fingerprint changed)"

    def _header(self, headline: str) -> list[str]:
        lines = [headline, f"golden: {self.golden_path}"]
        if self.current.sha256 is not None:
            lines.append(f"model: {self.current.model_ref}")
        if self.fingerprint_checked:
            lines.append(f"mode: {self._mode()}")
        return lines + self.notes

    def _verdict(
        self, outcome: Outcome, passed: bool, headline: str, body: Iterable[str]
    ) -> Verdict:
        lines = self._header(headline) + list(body)
        if self.changed:
            lines += ["fingerprint fields that changed (golden -> this run):"]
            lines += [f"  {change.describe()}" for change in self.changed]
        return Verdict(
            outcome=outcome,
            passed=passed,
            golden_path=self.golden_path,
            headline=headline,
            lines=tuple(lines),
            changed=self.changed,
            model=self.current.model_ref if self.current.sha256 else None,
        )

    def _fail(self, outcome: Outcome, headline: str, body: Iterable[str]) -> Verdict:
        return self._verdict(outcome, False, headline, body)

    def _identical(self) -> Verdict:
        if self.changed:
            return self._verdict(
                Outcome.IDENTICAL_NEW_FINGERPRINT,
                True,
                "identical to the golden under a changed fingerprint",
                [],
            )
        return self._verdict(Outcome.IDENTICAL, True, "identical to the golden", [])

    # -- request and fingerprint ----------------------------------------------------------------

    def _request_change_lines(self) -> list[str]:
        old = dict(self.golden.request or {})
        new = dict(self.current.request or {})
        for request in (old, new):
            if isinstance(request.get("settings"), Mapping):
                request["settings"] = {**IMPLICIT_SETTINGS, **request["settings"]}
        # For chat the messages are the input; the rendered prompt derives from them and the runtime
        derived = {"prompt_tokens"} | (
            {"prompt"} if "messages" in old and "messages" in new else set()
        )
        inputs_old = {k: v for k, v in old.items() if k not in derived}
        inputs_new = {k: v for k, v in new.items() if k not in derived}
        if inputs_old != inputs_new:
            return ["request diff (golden -> this run):", *_unified(_pretty(old), _pretty(new))]
        if old.get("prompt_tokens") != new.get("prompt_tokens") or old.get("prompt") != new.get(
            "prompt"
        ):
            what = (
                "the rendered chat prompt and its token ids changed although the messages did not"
                if old.get("prompt") != new.get("prompt")
                else "the prompt token ids changed although the prompt text did not"
            )
            self.notes.append(
                f"note: {what}: the runtime's tokenizer or template rendering changed; "
                "treated as fingerprint drift, not as a change of the test's input"
            )
        return []

    def _fingerprint_changes(self) -> tuple[FieldChange, ...]:
        changes = [
            _field_change(path, old, new)
            for path, old, new in differences(
                self.golden.fingerprint or {}, self.current.fingerprint or {}
            )
            if path not in ("model", "sha256")
        ]
        old_tokens = list((self.golden.request or {}).get("prompt_tokens", []))
        new_tokens = list((self.current.request or {}).get("prompt_tokens", []))
        if old_tokens != new_tokens:
            changes.append(
                FieldChange(
                    "request.prompt_tokens",
                    f"{len(old_tokens)} tokens",
                    f"{len(new_tokens)} tokens (first difference at position "
                    f"{_first_difference(old_tokens, new_tokens)})",
                )
            )
        return tuple(changes)

    # -- generations and extractions ------------------------------------------------------------

    def _compare_tokens(self) -> Verdict:
        golden, current = self.golden, self.current
        divergence = _first_difference(golden.tokens, current.tokens)
        check = self._batched_check()
        if check is not None and check.passed and divergence is None:
            return self._batched_pass(check)
        if check is not None and not check.passed and self.tolerant:
            self.notes.append(
                "decided by: incremental decoding, because the batched teacher-forced pass "
                f"failed ({check.describe()})"
            )
        if divergence is None:
            return self._identical()
        scored = self._score_golden_tokens()
        body = self._divergence_lines(divergence, scored)
        if not self.tolerant:
            headline = f"output differs from the golden from step {divergence} " + (
                "(strict mode: identical tokens required)"
                if self.policy.strict
                else "under the same model, request and fingerprint (exact mode)"
            )
            return self._fail(
                Outcome.MISMATCH if not self.changed else Outcome.DRIFT, headline, body
            )
        if scored is None:
            return self._fail(
                Outcome.DRIFT,
                f"output diverged at step {divergence} and cannot be teacher-forced: "
                "the result carries no live scorer (cached or unpickled result)",
                body,
            )
        if divergence >= len(golden.tokens):
            return self._fail(
                Outcome.DRIFT,
                f"the golden ends at step {divergence} (finish_reason {golden.finish_reason}) "
                f"but this run continued (finish_reason {current.finish_reason})",
                body,
            )
        forced = scored[divergence:]
        worst = max(forced, key=lambda s: s.gap)
        if len(scored) < len(golden.tokens):
            return self._fail(
                Outcome.DRIFT,
                f"teacher forcing stopped at step {len(scored) - 1}: this run cannot produce the "
                f"golden token {_token(worst.golden)} there (grammar or context)",
                body,
            )
        if worst.gap <= self.policy.tolerance:
            return self._verdict(
                Outcome.TOLERATED,
                True,
                f"passed within tolerance: diverged at step {divergence}; every golden token "
                f"stays within {_nats(self.policy.tolerance)} nats of the best "
                f"(max gap {worst.gap:.4f} at step {worst.index})",
                body,
            )
        return self._fail(
            Outcome.DRIFT,
            f"drift beyond tolerance: at step {worst.index} the golden token "
            f"{_token(worst.golden)} is {worst.gap:.4f} nats below the best token "
            f"{_token(worst.best)} "
            f"(tolerance {_nats(self.policy.tolerance)})",
            body,
        )

    def _batched_check(self) -> BatchedCheck | None:
        """The engine's batched teacher-forced check of this golden's tokens, if it made one."""
        generation = _generation_of(self.live)
        check = generation.batched if generation is not None else None
        return check if check is not None and check.tokens == self.golden.tokens else None

    def _batched_pass(self, check: BatchedCheck) -> Verdict:
        """The engine returned the golden's tokens because the batched pass accepted them."""
        body = [
            "decided by: one batched teacher-forced pass over the prompt and the "
            f"{len(check.tokens)} golden tokens (nothing was decoded; docs/drift.md)"
        ]
        if not self.tolerant:  # the engine checks in tolerance mode only; never call it exact
            return self._fail(
                Outcome.MISMATCH,
                "this result was verified by a batched pass, which only tolerance mode accepts",
                body,
            )
        return self._verdict(
            Outcome.TOLERATED,
            True,
            f"passed within tolerance (batched pass): every golden token stays within "
            f"{_nats(self.policy.tolerance)} nats of the best "
            f"(max gap {check.max_gap:.4f} at step {check.worst_step})",
            body,
        )

    def _score_golden_tokens(self) -> list[ScoredStep] | None:
        generation = _generation_of(self.live)
        if generation is None or generation.provenance.scorer is None:
            return None
        return generation.provenance.scorer(generation.provenance.request, self.golden.tokens)

    def _divergence_lines(self, divergence: int, scored: Sequence[ScoredStep] | None) -> list[str]:
        golden, current = self.golden, self.current
        generation = _generation_of(self.live)
        live_steps = generation.steps if generation is not None else current.steps
        golden_step = golden.steps[divergence] if divergence < len(golden.steps) else None
        live_step = live_steps[divergence] if divergence < len(live_steps) else None
        scored_step = (
            scored[divergence] if scored is not None and divergence < len(scored) else None
        )
        offset = sum(len(step.text) for step in golden.steps[:divergence])
        lines = [f"first divergent step: {divergence} (character {offset} of the golden text)"]
        lines += _step_table(golden_step, live_step, scored_step, golden, current, divergence)
        if scored is not None and divergence < len(scored):
            lines += self._forcing_lines(scored[divergence:])
        lines += ["text diff (golden -> this run):", *_unified_text(golden.text, current.text)]
        if golden.kind == "extraction":
            lines += _structured_lines(golden, current)
        return lines

    def _forcing_lines(self, forced: Sequence[ScoredStep]) -> list[str]:
        tolerance = self.policy.tolerance
        worst = max(forced, key=lambda s: s.gap)
        above = [s for s in forced if s.gap > tolerance]
        lines = [
            f"teacher-forcing the golden tokens from step {forced[0].index} on this run "
            f"({len(forced)} steps): max gap {worst.gap:.4f} nats at step {worst.index}; "
            f"{len(above)} step(s) above tolerance {_nats(tolerance)}"
        ]
        for step in sorted(above, key=lambda s: -s.gap)[:_WORST_STEPS_SHOWN]:
            lines.append(
                f"  step {step.index}: golden {_token(step.golden)} {_lp(step.golden.logprob)} vs "
                f"best {_token(step.best)} {_lp(step.best.logprob)}: gap {step.gap:.4f}"
            )
        if len(above) > _WORST_STEPS_SHOWN:
            lines.append(f"  ... and {len(above) - _WORST_STEPS_SHOWN} more")
        return lines

    # -- labels ---------------------------------------------------------------------------------

    def _compare_label(self) -> Verdict:
        golden, current = self.golden, self.current
        old = dict(golden.label_logprobs or {})
        new = dict(current.label_logprobs or {})
        if golden.label == current.label:
            return self._identical()
        body = ["labels (logprob in the golden run -> this run):"]
        for name in new or old:
            marks = [
                m
                for m, label in (("golden", golden.label), ("this run", current.label))
                if label == name
            ]
            body.append(
                f"  {name!r}: {_lp(old.get(name))} -> {_lp(new.get(name))}"
                + (f"  <- {' and '.join(marks)}" if marks else "")
            )
        golden_now = new.get(golden.label or "")
        chosen_now = new.get(current.label or "")
        gap = (
            chosen_now - golden_now
            if golden_now is not None and chosen_now is not None
            else math.inf
        )
        body.append(
            f"margin this run: {current.label!r} is {gap:.4f} nats above the golden label "
            f"{golden.label!r}"
        )
        if not self.tolerant:
            return self._fail(
                Outcome.MISMATCH if not self.changed else Outcome.DRIFT,
                f"label changed from {golden.label!r} to {current.label!r}",
                body,
            )
        if gap <= self.policy.tolerance:
            return self._verdict(
                Outcome.TOLERATED,
                True,
                f"passed within tolerance: this run chose {current.label!r} over the golden "
                f"{golden.label!r} by {gap:.4f} nats (tolerance {_nats(self.policy.tolerance)})",
                body,
            )
        return self._fail(
            Outcome.DRIFT,
            f"drift beyond tolerance: label changed from {golden.label!r} to {current.label!r} "
            f"by {gap:.4f} nats (tolerance {_nats(self.policy.tolerance)})",
            body,
        )

    # -- embeddings -----------------------------------------------------------------------------

    def _compare_embedding(self) -> Verdict:
        old = self.golden.vector or ()
        new = self.current.vector or ()
        if old == new:
            return self._identical()
        if len(old) != len(new):
            return self._fail(
                Outcome.MISMATCH if not self.changed else Outcome.DRIFT,
                f"embedding dimension changed from {len(old)} to {len(new)}",
                [],
            )
        similarity = cosine_similarity(old, new)
        max_abs = max((abs(a - b) for a, b in zip(old, new, strict=True)), default=0.0)
        body = [
            f"cosine similarity {similarity:.6f} (threshold {self.policy.embedding_min_cosine:g}); "
            f"max absolute difference {max_abs:.6g} over {len(old)} dimensions"
        ]
        if not self.tolerant:
            return self._fail(
                Outcome.MISMATCH if not self.changed else Outcome.DRIFT,
                "embedding differs from the golden "
                + ("(strict mode)" if self.policy.strict else "under the same fingerprint"),
                body,
            )
        if similarity >= self.policy.embedding_min_cosine:
            return self._verdict(
                Outcome.TOLERATED,
                True,
                f"passed within tolerance: cosine similarity {similarity:.6f} >= "
                f"{self.policy.embedding_min_cosine:g}",
                body,
            )
        return self._fail(
            Outcome.DRIFT,
            f"drift beyond tolerance: cosine similarity {similarity:.6f} < "
            f"{self.policy.embedding_min_cosine:g}",
            body,
        )

    # -- plain values ---------------------------------------------------------------------------

    def _compare_plain(self) -> Verdict:
        golden, current = self.golden, self.current
        if golden.kind == "text" and golden.text == current.text:
            return self._identical()
        if golden.kind == "value" and golden.value == current.value:
            return self._identical()
        body = ["diff (golden -> this run):", *self._output_diff()]
        if golden.kind == "value":
            body += _deepdiff_lines(golden.value, current.value)
        return self._fail(Outcome.MISMATCH, "value differs from the golden", body)

    def _output_diff(self) -> list[str]:
        golden, current = self.golden, self.current
        if golden.kind in ("generation", "extraction", "text") and current.kind == golden.kind:
            return ["output diff (golden -> this run):", *_unified_text(golden.text, current.text)]
        return ["output diff (golden -> this run):", *_unified(_summary(golden), _summary(current))]


# -- formatting helpers --------------------------------------------------------------------------


def _generation_of(value: object) -> Generation | None:
    if isinstance(value, ExtractedDict | ExtractedList):
        return value.generation
    if isinstance(value, Generation):
        return value
    return None


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm > 0 else (1.0 if list(a) == list(b) else 0.0)


def _field_change(path: str, old: Any, new: Any) -> FieldChange:
    if _is_digest(old) or _is_digest(new):  # library hashes: a prefix tells them apart
        return FieldChange(path, _short_digest(old), _short_digest(new))
    if isinstance(old, str) and isinstance(new, str) and max(len(old), len(new)) > 60:
        # Long feature lists (system_info): name the items that differ instead of two blobs.
        separator = " | " if "|" in old + new else " "
        old_items, new_items = _items(old, separator), _items(new, separator)
        removed = [item for item in old_items if item not in new_items]
        added = [item for item in new_items if item not in old_items]
        return FieldChange(
            path,
            "only in golden: " + (separator.join(removed) or "(none)"),
            "only in this run: " + (separator.join(added) or "(none)"),
        )
    return FieldChange(path, _show(old), _show(new))


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _short_digest(value: Any) -> str:
    return f"sha256 {value[:12]}…" if _is_digest(value) else _show(value)


def _items(text: str, separator: str) -> list[str]:
    return [item.strip() for item in text.split(separator.strip() or None) if item.strip()]


def _nats(value: float) -> str:
    return f"{value:.2f}"


def _lp(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _token(token: TokenLogprob) -> str:
    return f"{token.text!r} (id {token.token})"


def _show(value: Any, limit: int = 120) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256: the prefix is enough to tell builds apart
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _top_line(top: Sequence[TokenLogprob]) -> str:
    return " | ".join(f"{t.text!r} {t.logprob:.4f}" for t in top[:5]) or "n/a"


def _lookup(top: Sequence[TokenLogprob], token: int) -> float | None:
    return next((t.logprob for t in top if t.token == token), None)


def _step_table(
    golden_step: Step | None,
    live_step: Step | None,
    scored_step: ScoredStep | None,
    golden: GoldenRecord,
    current: GoldenRecord,
    divergence: int,
) -> list[str]:
    lines: list[str] = []
    golden_now = None
    if golden_step is not None:
        # Same context as the live step, so its top-k holds the exact number; the scorer covers
        # golden tokens that fell out of the top-k.
        if live_step is not None:
            golden_now = _lookup(live_step.top, golden_step.token)
        if golden_now is None and scored_step is not None:
            golden_now = scored_step.golden.logprob
        lines.append(
            f"  golden token   {golden_step.text!r} (id {golden_step.token}): logprob "
            f"{_lp(golden_step.logprob)} in the golden run, {_lp(golden_now)} in this run"
        )
    else:
        lines.append(
            f"  golden token   none: the golden ends after {len(golden.tokens)} tokens "
            f"(finish_reason {golden.finish_reason})"
        )
    actual_then = None
    if live_step is not None:
        if golden_step is not None:
            actual_then = _lookup(golden_step.top, live_step.token)
        lines.append(
            f"  actual token   {live_step.text!r} (id {live_step.token}): logprob "
            f"{_lp(actual_then)} in the golden run, {_lp(live_step.logprob)} in this run"
        )
    else:
        lines.append(
            f"  actual token   none: this run ends after {len(current.tokens)} tokens "
            f"(finish_reason {current.finish_reason})"
        )
    if golden_step is not None and live_step is not None:
        now = (
            f"{live_step.logprob - golden_now:.4f}"
            if golden_now is not None
            else "n/a (golden token below the top-k)"
        )
        then = (
            f"{golden_step.logprob - actual_then:.4f}"
            if actual_then is not None
            else "n/a (actual token below the golden top-k)"
        )
        lines.append(
            f"  margin: actual over golden in this run {now}; "
            f"golden over actual in the golden run {then}"
        )
    if live_step is not None:
        lines.append(f"  top-5 at step {divergence}, this run:   {_top_line(live_step.top)}")
    if golden_step is not None:
        lines.append(f"  top-5 at step {divergence}, golden run: {_top_line(golden_step.top)}")
    return lines


def _unified(old: Sequence[str], new: Sequence[str]) -> list[str]:
    diff = list(difflib.unified_diff(list(old), list(new), "golden", "this run", lineterm="", n=2))
    return [f"  {line}" for line in diff] or ["  (no difference)"]


def _unified_text(old: str | None, new: str | None) -> list[str]:
    old_lines, new_lines = (old or "").split("\n"), (new or "").split("\n")
    if old == new:
        return ["  (texts are identical; the token sequences differ)"]
    return _unified(old_lines, new_lines)


def _pretty(value: Any, indent: str = "") -> list[str]:
    """JSON-like lines for diffs: one field per line, scalar lists inline, long text as lines."""
    inner = indent + "  "
    if isinstance(value, Mapping) and value:
        lines = [f"{indent}{{"]
        for key, item in value.items():
            body = _pretty(item, inner)
            lines.append(f"{inner}{json.dumps(key)}: {body[0].lstrip()}")
            lines += body[1:]
        return [*lines, f"{indent}}}"]
    if isinstance(value, str) and "\n" in value:
        value = value.split("\n")
    if isinstance(value, list) and value and not all(_is_scalar(v) for v in value):
        return [f"{indent}[", *[line for v in value for line in _pretty(v, inner)], f"{indent}]"]
    if isinstance(value, list) and any(isinstance(v, str) for v in value):
        return [
            f"{indent}[",
            *[f"{inner}{json.dumps(v, ensure_ascii=False)}" for v in value],
            f"{indent}]",
        ]
    return [indent + json.dumps(value, ensure_ascii=False)]


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _summary(record: GoldenRecord) -> list[str]:
    if record.kind in ("generation", "extraction", "text"):
        return (record.text or "").split("\n")
    if record.kind == "label":
        return [f"label: {record.label}"]
    if record.kind == "embedding":
        return [f"embedding of {len(record.vector or ())} dimensions"]
    return _pretty(record.value)


def _deepdiff_lines(old: Any, new: Any) -> list[str]:
    from deepdiff import DeepDiff

    diff = DeepDiff(old, new, verbose_level=2)
    if not diff:
        return []
    return [
        "changed fields (deepdiff):",
        *[f"  {line}" for line in str(diff.pretty()).splitlines()],
    ]


def _structured_lines(golden: GoldenRecord, current: GoldenRecord) -> list[str]:
    import jsonschema

    values: list[Any] = []
    lines: list[str] = []
    for name, record in (("golden", golden), ("this run", current)):
        try:
            values.append(json.loads(record.text or ""))
        except json.JSONDecodeError as error:
            values.append(None)
            lines.append(f"{name} output is not JSON: {error}")
    lines += _deepdiff_lines(values[0], values[1])
    schema = (current.request or {}).get("schema")
    if isinstance(schema, Mapping):
        validator = jsonschema.Draft202012Validator(dict(schema))
        for name, value in (("golden", values[0]), ("this run", values[1])):
            if value is None:
                continue
            for problem in sorted(
                validator.iter_errors(value), key=lambda e: list(e.absolute_path)
            ):
                where = "/".join(map(str, problem.absolute_path)) or "(root)"
                lines.append(f"schema error in the {name} value at {where}: {problem.message}")
    return lines


# -- the session log -----------------------------------------------------------------------------

_LOGGED = {
    Outcome.IDENTICAL_NEW_FINGERPRINT,
    Outcome.TOLERATED,
    Outcome.REWRITTEN,
    Outcome.MODEL_CHANGED,
    Outcome.REQUEST_CHANGED,
    Outcome.DRIFT,
    Outcome.MISMATCH,
    Outcome.CORRUPT,
    Outcome.MISSING,
}


@dataclass(frozen=True)
class LogEntry:
    test: str
    golden_path: str
    outcome: Outcome
    passed: bool
    headline: str
    lines: tuple[str, ...]
    changed: tuple[FieldChange, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogEntry:
        return cls(
            test=str(data["test"]),
            golden_path=str(data["golden_path"]),
            outcome=Outcome(data["outcome"]),
            passed=bool(data["passed"]),
            headline=str(data["headline"]),
            lines=tuple(str(x) for x in data["lines"]),
            changed=tuple(FieldChange(**c) for c in data["changed"]),
        )


class DriftLog:
    """Golden comparisons worth reporting in this session (not plain identical matches).

    Under pytest-xdist each worker has its own log: ship ``to_json()`` through ``workeroutput``
    and ``merge_json()`` it on the controller.
    """

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def add(self, verdict: Verdict, *, test: str | None = None, rewriting: bool = False) -> None:
        if verdict.outcome not in _LOGGED:
            return
        outcome = Outcome.REWRITTEN if rewriting and not verdict.passed else verdict.outcome
        self.entries.append(
            LogEntry(
                test=test or verdict.golden_path,
                golden_path=verdict.golden_path,
                outcome=outcome,
                passed=verdict.passed or rewriting,
                headline=verdict.headline,
                lines=verdict.lines,
                changed=verdict.changed,
            )
        )

    def write_failed(self, golden_path: str, message: str, *, test: str) -> None:
        """``--snapshot-update`` could not write this golden: a failure, not a rewrite."""
        self.entries = [
            e
            for e in self.entries
            if not (e.golden_path == golden_path and e.outcome is Outcome.REWRITTEN)
        ]
        self.entries.append(
            LogEntry(
                test=test,
                golden_path=golden_path,
                outcome=Outcome.WRITE_FAILED,
                passed=False,
                headline=message,
                lines=(message,),
                changed=(),
            )
        )

    def to_json(self) -> str:
        return json.dumps([entry.to_dict() for entry in self.entries], ensure_ascii=False)

    def merge_json(self, payload: str) -> None:
        self.entries.extend(LogEntry.from_dict(item) for item in json.loads(payload))

    def _sorted(self) -> list[LogEntry]:
        return sorted(self.entries, key=lambda e: (e.test, e.golden_path))

    def _by_outcome(self, *outcomes: Outcome) -> list[LogEntry]:
        return [e for e in self._sorted() if e.outcome in outcomes]

    @property
    def failures(self) -> list[LogEntry]:
        return [e for e in self._sorted() if not e.passed]

    def summary_lines(self) -> list[str]:
        """Lines for the terminal summary; empty when there is nothing beyond identical matches."""
        if not self.entries:
            return []
        tolerated = self._by_outcome(Outcome.TOLERATED)
        identical = self._by_outcome(Outcome.IDENTICAL_NEW_FINGERPRINT)
        rewritten = self._by_outcome(Outcome.REWRITTEN)
        failures = self.failures
        counts = [
            f"{len(tolerated)} passed within tolerance" if tolerated else "",
            f"{len(identical)} identical under a changed fingerprint" if identical else "",
            f"{len(rewritten)} rewritten" if rewritten else "",
            f"{len(failures)} failed" if failures else "",
        ]
        lines = ["goldens: " + ", ".join(c for c in counts if c)]
        for entry in tolerated:
            lines.append(f"PASS (tolerance) {entry.test}: {entry.headline}")
            lines.append(f"    golden {entry.golden_path}")
            lines += [f"    changed {c.describe()}" for c in entry.changed]
        if identical:
            fields = sorted({c.describe() for e in identical for c in e.changed})
            lines.append("identical despite fingerprint changes: " + "; ".join(fields))
        for entry in rewritten:
            lines.append(f"REWRITTEN {entry.test}: {entry.headline}")
        for entry in failures:
            lines.append(f"FAIL ({entry.outcome.value}) {entry.test}: {entry.headline}")
        return lines

    def markdown(self) -> str:
        out = ["# Golden drift report", ""]
        failures = self.failures
        tolerated = self._by_outcome(Outcome.TOLERATED)
        identical = self._by_outcome(Outcome.IDENTICAL_NEW_FINGERPRINT)
        rewritten = self._by_outcome(Outcome.REWRITTEN)
        out.append(
            f"{len(failures)} failed, {len(tolerated)} passed within tolerance, "
            f"{len(identical)} identical under a changed fingerprint, {len(rewritten)} rewritten."
        )
        for title, entries in (
            ("Failures", failures),
            ("Passed within tolerance", tolerated),
            ("Rewritten by --snapshot-update", rewritten),
        ):
            if not entries:
                continue
            out += ["", f"## {title}"]
            for entry in entries:
                out += [
                    "",
                    f"### `{entry.test}`",
                    "",
                    f"**{entry.outcome.value}**: {_md_escape(entry.headline)}",
                    "",
                    f"Golden: `{entry.golden_path}`",
                    "",
                    "<details><summary>details</summary>",
                    "",
                    _fence(entry.lines),
                    "",
                    "</details>",
                ]
        if identical:
            out += ["", "## Identical under a changed fingerprint", ""]
            out += [f"- `{entry.test}`" for entry in identical]
            fields = sorted({c.describe() for e in identical for c in e.changed})
            out += ["", "Changed fields:", "", *[f"- `{f}`" for f in fields]]
        return "\n".join(out) + "\n"

    def write_markdown(self, path: Path) -> None:
        atomic_write_text(Path(path), self.markdown())


def _md_escape(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _fence(lines: Sequence[str]) -> str:
    body = "\n".join(lines)
    ticks = "```"
    while ticks in body:
        ticks += "`"
    return f"{ticks}text\n{body}\n{ticks}"


__all__ = [
    "DEFAULT_EMBEDDING_MIN_COSINE",
    "DEFAULT_TOLERANCE",
    "DriftLog",
    "DriftPolicy",
    "FieldChange",
    "GoldenRecord",
    "LogEntry",
    "Outcome",
    "Verdict",
    "compare",
    "corrupt_verdict",
    "cosine_similarity",
    "missing_verdict",
    "record_of",
]
