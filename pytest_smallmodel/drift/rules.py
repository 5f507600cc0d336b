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

This module is the check every kind shares: the kind, the model, the request and the
fingerprint decide the mode; each kind's rule (``drift/kinds/``) then compares what its golden
holds and hands back what it found, which ``_Comparison`` makes the ``Verdict``. It decides and
computes; it writes no prose (``explanation`` does). It is pure: no pytest, no syrupy.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from pytest_smallmodel.common.fingerprint import differences
from pytest_smallmodel.common.fingerprint import normalized_request as normalized_request_of
from pytest_smallmodel.common.results import BatchedCheck, generation_of
from pytest_smallmodel.drift.kinds import KINDS
from pytest_smallmodel.drift.kinds.embedding import cosine_similarity
from pytest_smallmodel.drift.kinds.generation import first_difference, logprob_of, text_problem
from pytest_smallmodel.drift.topk import TopKAgreement, agreement_of
from pytest_smallmodel.drift.verdict import (
    FieldChange,
    Forcing,
    Mode,
    Outcome,
    PromptChange,
    Reason,
    Verdict,
)
from pytest_smallmodel.goldens.kinds import FORMATS, record_of
from pytest_smallmodel.goldens.records import GoldenRecord

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
    # (model name, nats): a model's own tolerance (its spec's ``tolerance``) over ``tolerance``.
    # A tuple, not a dict: the policy is hashable (the golden extension is cached per policy).
    model_tolerances: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for whose, tolerance in (("", self.tolerance), *self.model_tolerances):
            if not (math.isfinite(tolerance) and tolerance >= 0):
                raise ValueError(
                    f"{f'model {whose}: ' if whose else ''}tolerance must be a non-negative "
                    f"number of nats, got {tolerance}"
                )
        if not (-1.0 <= self.embedding_min_cosine <= 1.0):
            raise ValueError(
                f"embedding_min_cosine must be within [-1, 1], got {self.embedding_min_cosine}"
            )

    def tolerance_for(self, model: str | None) -> float:
        """The tolerance for goldens recorded with ``model``: its own, else the policy's."""
        return dict(self.model_tolerances).get(model or "", self.tolerance)


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
    return normalized_request_of(record.request or {})


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
            return self.decide(Outcome.REQUEST_CHANGED, False, Reason.KIND_CHANGED)
        kind = KINDS[golden.kind]
        if not FORMATS[golden.kind].model_result:
            return kind.compare(self)  # a plain value: equal or not, whatever ran the test
        if golden.sha256 != current.sha256:
            return self.decide(Outcome.MODEL_CHANGED, False, Reason.MODEL_CHANGED)
        if request_inputs_differ(golden, current):
            return self.decide(Outcome.REQUEST_CHANGED, False, Reason.REQUEST_CHANGED)
        self.prompt_change = self._prompt_change()
        self.changed = self.fingerprint_changes()
        if not self.changed:
            self.mode = Mode.EXACT
        else:
            self.mode = Mode.STRICT if self.policy.strict else Mode.TOLERANCE
        return kind.compare(self)

    # -- what a kind's rule is handed (drift.kinds.base.Check) ----------------------------------

    @property
    def tolerant(self) -> bool:
        return self.mode is Mode.TOLERANCE

    @property
    def tolerance(self) -> float:
        return self.policy.tolerance_for(self.golden.model)

    @property
    def min_cosine(self) -> float:
        return self.policy.embedding_min_cosine

    @property
    def strict(self) -> bool:
        return self.policy.strict

    def compare_nested(self, golden: GoldenRecord, live: object, golden_path: str) -> Verdict:
        return compare(golden, live, policy=self.policy, golden_path=golden_path)

    def decide(self, outcome: Outcome, passed: bool, reason: Reason, **found: Any) -> Verdict:
        # Another request or kind predicts from other contexts: nothing to compare step by step.
        same_contexts = reason not in (Reason.KIND_CHANGED, Reason.REQUEST_CHANGED)
        return Verdict(
            outcome=outcome,
            passed=passed,
            golden_path=self.golden_path,
            reason=reason,
            golden=self.golden,
            current=self.current,
            mode=self.mode,
            tolerance=self.tolerance,
            min_cosine=self.policy.embedding_min_cosine,
            changed=self.changed,
            prompt_change=self.prompt_change,
            batched=self.batched_check(),
            agreement=self._agreement(found.get("forcing")) if same_contexts else None,
            **found,
        )

    def _agreement(self, forcing: Forcing | None) -> TopKAgreement | None:
        """The golden's stored top-k against this run's at the same contexts; None for a kind
        without token steps (its golden keeps none)."""
        generation = generation_of(self.live)
        live_steps = generation.steps if generation is not None else self.current.steps
        return agreement_of(self.golden.steps, live_steps, forcing.steps if forcing else ())

    def identical(self) -> Verdict:
        outcome = Outcome.IDENTICAL_NEW_FINGERPRINT if self.changed else Outcome.IDENTICAL
        return self.decide(outcome, True, Reason.IDENTICAL)

    def not_tolerated(self) -> Outcome:
        """A difference outside tolerance mode: a mismatch, or drift if the fingerprint moved."""
        return Outcome.MISMATCH if not self.changed else Outcome.DRIFT

    def judge(self, within: bool, outside_tolerance_mode: Reason, **found: Any) -> Verdict:
        """The one ending of every comparison that found a difference: outside tolerance mode
        it fails; in tolerance mode it passes ``within`` the tolerance and drifts beyond it."""
        if not self.tolerant:
            return self.decide(self.not_tolerated(), False, outside_tolerance_mode, **found)
        if within:
            return self.decide(Outcome.TOLERATED, True, Reason.WITHIN_TOLERANCE, **found)
        return self.decide(Outcome.DRIFT, False, Reason.BEYOND_TOLERANCE, **found)

    def corrupt(self, problem: str) -> Verdict:
        return corrupt_verdict(self.golden_path, problem)

    def batched_check(self) -> BatchedCheck | None:
        """The engine's batched teacher-forced check of this golden's tokens, if it made one
        (only a generation or an extraction carries one)."""
        generation = generation_of(self.live)
        check = generation.batched if generation is not None else None
        return check if check is not None and check.tokens == self.golden.tokens else None

    # -- request and fingerprint ----------------------------------------------------------------

    def _prompt_change(self) -> PromptChange | None:
        old, new = self.golden.request or {}, self.current.request or {}
        if old.get("prompt") != new.get("prompt"):
            return PromptChange.RENDERED_CHAT
        if old.get("prompt_tokens") != new.get("prompt_tokens"):
            return PromptChange.TOKEN_IDS
        return None

    def fingerprint_changes(self) -> tuple[FieldChange, ...]:
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
    "first_difference",
    "logprob_of",
    "missing_verdict",
    "text_problem",
]
