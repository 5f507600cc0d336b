"""Deciding whether a result still matches its golden: the rules, producing a ``Verdict``.

The rules depend on what changed since the golden was recorded (docs/drift.md):

1. the model file (sha256) changed: fail, the outputs need a human review;
2. the test's input changed (prompt text or chat messages, settings, stop, max_tokens, schema,
   labels): fail with a diff of the request and of the output;
3. nothing changed, not even the environment fingerprint: the output must be identical;
4. only the environment changed (runtime, build, CPU features, GPU, or the tokenizer's ids for an
   unchanged prompt): equal outputs pass; diverging outputs pass only if, teacher-forcing the
   golden tokens on the live model, every golden token stays within ``tolerance`` nats of the
   best token. ``strict`` turns this case into rule 3.

This module decides and computes; it writes no prose (``explain.py`` does). It is pure: no
pytest, no syrupy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_smallmodel.common.fingerprint import IMPLICIT_FIELDS, IMPLICIT_SETTINGS, differences
from pytest_smallmodel.common.results import BatchedCheck, ScoredStep, TokenLogprob
from pytest_smallmodel.drift import evaluation_rules
from pytest_smallmodel.drift.verdict import (
    Divergence,
    EmbeddingScores,
    FieldChange,
    Forcing,
    LabelScores,
    Mode,
    Outcome,
    PromptChange,
    Reason,
    Verdict,
)
from pytest_smallmodel.goldens.file_format import quoted
from pytest_smallmodel.goldens.records import GoldenRecord, generation_of, record_of

# Teacher-forced gaps measured on SmolLM2 Q4_1 (docs/drift.md): max 0.239 nats across two builds
# (1,654 steps), 0.356 with flash attention toggled and 0.494 with an f32 KV cache (753 steps
# each). 1.0 is twice the largest, so long suites do not trip on the tail; a golden token within
# it keeps at least exp(-1) = 37 % of the best token's probability, while a changed prompt puts
# golden tokens several nats below the best.
DEFAULT_TOLERANCE = 1.0
# Measured 1 - cosine: 1.4e-4 (f32 KV cache) and 2.1e-4 (flash attention); different texts scored
# at most 0.88. 0.999 leaves 5x headroom over the noise and is far above any change of meaning.
DEFAULT_EMBEDDING_MIN_COSINE = 0.999


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


def corrupt_verdict(golden_path: str, problem: str) -> Verdict:
    return Verdict(
        outcome=Outcome.CORRUPT,
        passed=False,
        golden_path=golden_path,
        reason=Reason.CORRUPT,
        problem=problem,
    )


def missing_verdict(golden_path: str) -> Verdict:
    return Verdict(
        outcome=Outcome.MISSING, passed=False, golden_path=golden_path, reason=Reason.MISSING
    )


def compare(
    golden: GoldenRecord, live: object, *, policy: DriftPolicy, golden_path: str
) -> Verdict:
    """Apply rules 1-4 to a parsed golden and the live result the test asserted."""
    return _Comparison(golden, live, policy, golden_path).run()


def normalized_request(record: GoldenRecord) -> dict[str, Any]:
    """The record's request with settings recorded since it was written filled in as they were."""
    request = dict(record.request or {})
    if isinstance(request.get("settings"), Mapping):
        request["settings"] = dict(sorted({**IMPLICIT_SETTINGS, **request["settings"]}.items()))
    return request


def request_inputs_differ(golden: GoldenRecord, current: GoldenRecord) -> bool:
    """True when the test's input changed (rule 2); the prompt's derived forms do not count."""
    old, new = normalized_request(golden), normalized_request(current)
    # For chat the messages are the input; the rendered prompt derives from them and the runtime
    derived = {"prompt_tokens"} | ({"prompt"} if "messages" in old and "messages" in new else set())
    return {k: v for k, v in old.items() if k not in derived} != {
        k: v for k, v in new.items() if k not in derived
    }


@dataclass
class _Comparison:
    golden: GoldenRecord
    live: object
    policy: DriftPolicy
    golden_path: str
    current: GoldenRecord = field(init=False)
    changed: tuple[FieldChange, ...] = field(init=False, default=())
    prompt_change: PromptChange | None = field(init=False, default=None)
    mode: Mode | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.current = record_of(self.live)

    def run(self) -> Verdict:
        golden, current = self.golden, self.current
        if golden.kind != current.kind:
            return self._decide(Outcome.REQUEST_CHANGED, False, Reason.KIND_CHANGED)
        if golden.kind in ("text", "value"):
            return self._compare_plain()
        if golden.kind == "evaluation":
            return evaluation_rules.compare_evaluation(
                golden, current, policy=self.policy, golden_path=self.golden_path,
                changed=self._fingerprint_changes(), compare_case=compare,
            )  # fmt: skip
        if golden.sha256 != current.sha256:
            return self._decide(Outcome.MODEL_CHANGED, False, Reason.MODEL_CHANGED)
        if request_inputs_differ(golden, current):
            return self._decide(Outcome.REQUEST_CHANGED, False, Reason.REQUEST_CHANGED)
        self.prompt_change = self._prompt_change()
        self.changed = self._fingerprint_changes()
        if not self.changed:
            self.mode = Mode.EXACT
        else:
            self.mode = Mode.STRICT if self.policy.strict else Mode.TOLERANCE
        if golden.kind in ("generation", "extraction"):
            return self._compare_tokens()
        if golden.kind == "label":
            return self._compare_label()
        return self._compare_embedding()

    @property
    def tolerant(self) -> bool:
        return self.mode is Mode.TOLERANCE

    def _decide(self, outcome: Outcome, passed: bool, reason: Reason, **found: Any) -> Verdict:
        return Verdict(
            outcome=outcome,
            passed=passed,
            golden_path=self.golden_path,
            reason=reason,
            golden=self.golden,
            current=self.current,
            mode=self.mode,
            tolerance=self.policy.tolerance,
            min_cosine=self.policy.embedding_min_cosine,
            changed=self.changed,
            prompt_change=self.prompt_change,
            batched=self._batched_check()
            if self.golden.kind in ("generation", "extraction")
            else None,
            **found,
        )

    def _identical(self) -> Verdict:
        outcome = Outcome.IDENTICAL_NEW_FINGERPRINT if self.changed else Outcome.IDENTICAL
        return self._decide(outcome, True, Reason.IDENTICAL)

    def _not_tolerated(self) -> Outcome:
        """A difference outside tolerance mode: a mismatch, or drift if the fingerprint moved."""
        return Outcome.MISMATCH if not self.changed else Outcome.DRIFT

    def _judge(self, within: bool, outside_tolerance_mode: Reason, **found: Any) -> Verdict:
        """The one ending of every comparison that found a difference: outside tolerance mode
        it fails; in tolerance mode it passes ``within`` the tolerance and drifts beyond it."""
        if not self.tolerant:
            return self._decide(self._not_tolerated(), False, outside_tolerance_mode, **found)
        if within:
            return self._decide(Outcome.TOLERATED, True, Reason.WITHIN_TOLERANCE, **found)
        return self._decide(Outcome.DRIFT, False, Reason.BEYOND_TOLERANCE, **found)

    # -- request and fingerprint ----------------------------------------------------------------

    def _prompt_change(self) -> PromptChange | None:
        old, new = self.golden.request or {}, self.current.request or {}
        if old.get("prompt") != new.get("prompt"):
            return PromptChange.RENDERED_CHAT
        if old.get("prompt_tokens") != new.get("prompt_tokens"):
            return PromptChange.TOKEN_IDS
        return None

    def _fingerprint_changes(self) -> tuple[FieldChange, ...]:
        changes = [
            field_change(path, old, new)
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
                    f"{first_difference(old_tokens, new_tokens)})",
                )
            )
        return tuple(changes)

    # -- generations and extractions ------------------------------------------------------------

    def _compare_tokens(self) -> Verdict:
        golden, current = self.golden, self.current
        step = first_difference(golden.tokens, current.tokens)
        if step is None:
            problem = text_problem(golden, current, model=current.model_ref)
            if problem is not None:
                return corrupt_verdict(self.golden_path, problem)
        check = self._batched_check()
        if check is not None and check.passed and step is None:
            if not self.tolerant:  # the engine checks in tolerance mode only; never call it exact
                return self._decide(Outcome.MISMATCH, False, Reason.BATCHED_OUTSIDE_TOLERANCE)
            return self._decide(Outcome.TOLERATED, True, Reason.BATCHED_PASS)
        if step is None:
            return self._identical()
        scored = self._score_golden_tokens()
        problem = self._forced_pieces_problem(scored)
        if problem is not None:
            return corrupt_verdict(self.golden_path, problem)
        found: dict[str, Any] = {"divergence": self._divergence(step, scored)}
        if scored is not None and step < len(scored):
            found["forcing"] = Forcing(tuple(scored[step:]), self.policy.tolerance)
        forcing: Forcing | None = found.get("forcing")
        if self.tolerant:
            if scored is None:
                return self._decide(Outcome.DRIFT, False, Reason.NOT_SCORABLE, **found)
            if step >= len(golden.tokens):
                return self._decide(Outcome.DRIFT, False, Reason.GOLDEN_ENDED, **found)
            if forcing is None or len(scored) < len(golden.tokens):
                return self._decide(Outcome.DRIFT, False, Reason.FORCING_STOPPED, **found)
        within = forcing is not None and forcing.worst.gap <= self.policy.tolerance
        return self._judge(within, Reason.TOKENS_DIFFER, **found)

    def _forced_pieces_problem(self, scored: Sequence[ScoredStep] | None) -> str | None:
        """Teacher forcing read the golden's token ids with this model: their texts must be the
        golden's step texts (same model file, same engine: same pieces)."""
        if scored is None or not _same_engine(self.golden, self.current):
            return None
        for forced, step in zip(scored, self.golden.steps, strict=False):
            if forced.golden.text != step.text:
                return _step_text_problem(
                    forced.index, step.token, step.text, forced.golden.text, self.current.model_ref
                )
        return None

    def _batched_check(self) -> BatchedCheck | None:
        """The engine's batched teacher-forced check of this golden's tokens, if it made one."""
        generation = generation_of(self.live)
        check = generation.batched if generation is not None else None
        return check if check is not None and check.tokens == self.golden.tokens else None

    def _score_golden_tokens(self) -> list[ScoredStep] | None:
        generation = generation_of(self.live)
        if generation is None or generation.provenance.scorer is None:
            return None
        return generation.provenance.scorer(generation.provenance.request, self.golden.tokens)

    def _divergence(self, step: int, scored: Sequence[ScoredStep] | None) -> Divergence:
        golden = self.golden
        generation = generation_of(self.live)
        live_steps = generation.steps if generation is not None else self.current.steps
        golden_step = golden.steps[step] if step < len(golden.steps) else None
        live_step = live_steps[step] if step < len(live_steps) else None
        golden_now = actual_then = None
        if golden_step is not None:
            # Same context as the live step, so its top-k holds the exact number; the scorer
            # covers golden tokens that fell out of the top-k.
            if live_step is not None:
                golden_now = logprob_of(live_step.top, golden_step.token)
            if golden_now is None and scored is not None and step < len(scored):
                golden_now = scored[step].golden.logprob
        if live_step is not None and golden_step is not None:
            actual_then = logprob_of(golden_step.top, live_step.token)
        return Divergence(
            step=step,
            char_offset=sum(len(s.text) for s in golden.steps[:step]),
            golden_step=golden_step,
            live_step=live_step,
            golden_now=golden_now,
            actual_then=actual_then,
        )

    # -- labels ---------------------------------------------------------------------------------

    def _compare_label(self) -> Verdict:
        golden, current = self.golden, self.current
        if golden.label == current.label:
            return self._identical()
        old = dict(golden.label_logprobs or {})
        new = dict(current.label_logprobs or {})
        golden_now = new.get(golden.label or "")
        chosen_now = new.get(current.label or "")
        margin = (
            chosen_now - golden_now
            if golden_now is not None and chosen_now is not None
            else math.inf
        )
        scores = LabelScores(golden.label or "", current.label or "", old, new, margin)
        return self._judge(margin <= self.policy.tolerance, Reason.LABEL_CHANGED, labels=scores)

    # -- embeddings -----------------------------------------------------------------------------

    def _compare_embedding(self) -> Verdict:
        old = self.golden.vector or ()
        new = self.current.vector or ()
        if old == new:
            return self._identical()
        min_cosine = self.policy.embedding_min_cosine
        if len(old) != len(new):
            scores = EmbeddingScores(len(old), len(new), None, None, min_cosine)
            return self._decide(
                self._not_tolerated(), False, Reason.DIMENSIONS_CHANGED, embedding=scores
            )
        similarity = cosine_similarity(old, new)
        max_abs = max((abs(a - b) for a, b in zip(old, new, strict=True)), default=0.0)
        scores = EmbeddingScores(len(old), len(new), similarity, max_abs, min_cosine)
        return self._judge(similarity >= min_cosine, Reason.EMBEDDING_DIFFERS, embedding=scores)

    # -- plain values ---------------------------------------------------------------------------

    def _compare_plain(self) -> Verdict:
        golden, current = self.golden, self.current
        if golden.kind == "text" and golden.text == current.text:
            return self._identical()
        if golden.kind == "value" and golden.value == current.value:
            return self._identical()
        return self._decide(Outcome.MISMATCH, False, Reason.VALUE_DIFFERS)


def text_problem(golden: GoldenRecord, current: GoldenRecord, *, model: str) -> str | None:
    """Where a golden's text or step texts differ from what ``current``, a result of the same
    model file with the same token ids, reads (None: they agree). Comparisons read token ids,
    reviewers read text: a golden whose text was edited apart from its tokens is corrupt."""
    if golden.sha256 != current.sha256 or golden.tokens != current.tokens:
        return None
    if golden.text != current.text:
        return (
            f"field 'text' is {quoted(golden.text or '')} but {model} reads its tokens as "
            f"{quoted(current.text or '')}: the text was edited apart from the tokens"
        )
    if not _same_engine(golden, current):
        return None  # another engine may write a split character's bytes otherwise
    for index, (old, new) in enumerate(zip(golden.steps, current.steps, strict=True)):
        if old.text != new.text:
            return _step_text_problem(index, old.token, old.text, new.text, model)
    return None


def _step_text_problem(index: int, token: int, recorded: str, read: str, model: str) -> str:
    return (
        f"field 'steps[{index}].text' is {quoted(recorded)} but {model} reads token {token} "
        f"as {quoted(read)}: the step text was edited apart from its token"
    )


def _same_engine(golden: GoldenRecord, current: GoldenRecord) -> bool:
    def engine(record: GoldenRecord) -> Any:
        return (record.fingerprint or {}).get("engine", IMPLICIT_FIELDS["engine"])

    return bool(engine(golden) == engine(current))


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm > 0 else (1.0 if list(a) == list(b) else 0.0)


def logprob_of(top: Sequence[TokenLogprob], token: int) -> float | None:
    """``token``'s logprob in a stored top-k list (None: it was not among them)."""
    return next((t.logprob for t in top if t.token == token), None)


def field_change(path: str, old: Any, new: Any) -> FieldChange:
    """A fingerprint difference with values shortened so that a reader sees what differs."""
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
    return FieldChange(path, show_value(old), show_value(new))


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _short_digest(value: Any) -> str:
    return f"sha256 {value[:12]}…" if _is_digest(value) else show_value(value)


def _items(text: str, separator: str) -> list[str]:
    return [item.strip() for item in text.split(separator.strip() or None) if item.strip()]


def show_value(value: Any, limit: int = 120) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256: the prefix is enough to tell builds apart
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "DEFAULT_EMBEDDING_MIN_COSINE",
    "DEFAULT_TOLERANCE",
    "DriftPolicy",
    "compare",
    "corrupt_verdict",
    "cosine_similarity",
    "missing_verdict",
    "text_problem",
]
