"""How far two runs' next-token distributions are apart where both stored top-k lists.

llama.cpp reports quantization damage the same way (``llama-perplexity --kl-divergence``: mean
KL divergence and the share of steps whose top token is the same). A golden keeps only the top-k
logprobs of each step, so the divergence here is over the *shared support*: the tokens both lists
contain, each list renormalised over them (docs/drift.md, "Top-k agreement").

Steps are compared only where both runs predicted from the same context: before and at the first
divergent step the live decode's own steps, after it the teacher-forced steps (the golden's
tokens fed to this run), which carry this run's top-k at the golden's context. This module is
pure data and arithmetic; ``explanation`` and ``reports`` render it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_smallmodel.common.results import ScoredStep, Step, TokenLogprob


@dataclass(frozen=True)
class StepAgreement:
    """One step where both runs' top-k lists are known for the same context."""

    index: int
    shared: int  # tokens both top-k lists contain
    kl: float | None  # KL(golden || this run) over the shared support; None: nothing shared
    top_agrees: bool  # both runs rank the same token first

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.index,
            "shared": self.shared,
            "kl": self.kl,
            "top_agrees": self.top_agrees,
        }


@dataclass(frozen=True)
class TopKAgreement:
    """Per-step agreement of a golden's stored top-k with this run's, summarised."""

    steps: tuple[StepAgreement, ...]
    divergent_step: int | None  # the first step whose tokens differ; None: none differ

    @property
    def kls(self) -> list[float]:
        return [s.kl for s in self.steps if s.kl is not None]

    @property
    def mean_kl(self) -> float | None:
        kls = self.kls
        return math.fsum(kls) / len(kls) if kls else None

    @property
    def worst(self) -> StepAgreement | None:
        scored = [s for s in self.steps if s.kl is not None]
        return max(scored, key=lambda s: s.kl or 0.0) if scored else None

    @property
    def top_agreement(self) -> float | None:
        """The share of compared steps whose top token agrees."""
        if not self.steps:
            return None
        return sum(s.top_agrees for s in self.steps) / len(self.steps)

    @property
    def at_divergence(self) -> StepAgreement | None:
        return next((s for s in self.steps if s.index == self.divergent_step), None)

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        at = self.at_divergence
        return {
            "steps_compared": len(self.steps),
            "mean_kl": self.mean_kl,
            "max_kl": worst.kl if worst is not None else None,
            "max_kl_step": worst.index if worst is not None else None,
            "top_agreement": self.top_agreement,
            "top_agreeing_steps": sum(s.top_agrees for s in self.steps),
            "divergent_step": self.divergent_step,
            "at_divergence": at.to_dict() if at is not None else None,
        }


def shared_support_kl(
    golden: Sequence[TokenLogprob], current: Sequence[TokenLogprob]
) -> tuple[float | None, int]:
    """KL(P || Q) in nats, P and Q the two top-k lists renormalised over the tokens both hold,
    and how many tokens that is (None when they share none). One shared token gives 0: both
    renormalised distributions put all their mass on it."""
    p_logprobs = {t.token: t.logprob for t in golden}
    q_logprobs = {t.token: t.logprob for t in current}
    shared = [token for token in p_logprobs if token in q_logprobs]
    if not shared:
        return None, 0
    p_norm = _log_sum_exp([p_logprobs[t] for t in shared])
    q_norm = _log_sum_exp([q_logprobs[t] for t in shared])
    kl = math.fsum(
        math.exp(p_logprobs[t] - p_norm) * ((p_logprobs[t] - p_norm) - (q_logprobs[t] - q_norm))
        for t in shared
    )
    # Rounding can leave a tiny negative value for identical lists; KL is never below 0.
    return max(kl, 0.0), len(shared)


def step_agreement(
    index: int, golden: Sequence[TokenLogprob], current: Sequence[TokenLogprob]
) -> StepAgreement | None:
    """One step's agreement, or None when either run kept no top-k there."""
    if not golden or not current:
        return None
    kl, shared = shared_support_kl(golden, current)
    return StepAgreement(index, shared, kl, _best(golden) == _best(current))


def agreement_of(
    golden_steps: Sequence[Step],
    live_steps: Sequence[Step],
    forced: Sequence[ScoredStep] = (),
) -> TopKAgreement | None:
    """The agreement of a golden's steps with this run at the golden's contexts: ``live_steps``
    up to and including the first step whose token differs, then ``forced`` (teacher-forced
    steps, by index). None when no step of both runs kept a top-k."""
    divergent = next(
        (
            i
            for i, (g, live) in enumerate(zip(golden_steps, live_steps, strict=False))
            if g.token != live.token
        ),
        None,
    )
    if divergent is None and len(golden_steps) != len(live_steps):
        divergent = min(len(golden_steps), len(live_steps))
    aligned: dict[int, Sequence[TokenLogprob]] = {}
    for index, live in enumerate(live_steps):
        if divergent is not None and index > divergent:
            break
        aligned[index] = live.top
    for step in forced:
        aligned.setdefault(step.index, step.top)
    found = [
        agreement
        for index, step in enumerate(golden_steps)
        if index in aligned
        and (agreement := step_agreement(index, step.top, aligned[index])) is not None
    ]
    if not found:
        return None
    return TopKAgreement(tuple(found), divergent)


def _best(top: Sequence[TokenLogprob]) -> int:
    return max(top, key=lambda t: t.logprob).token


def _log_sum_exp(values: Sequence[float]) -> float:
    peak = max(values)
    return peak + math.log(math.fsum(math.exp(v - peak) for v in values))
