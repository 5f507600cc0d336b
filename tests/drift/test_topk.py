"""KL divergence over the shared top-k support and top-token agreement, in every drift report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from report_schema import written_report

from pytest_smallmodel.common.results import (
    Generation,
    Provenance,
    Request,
    ScoredStep,
    Step,
    Timings,
    TokenLogprob,
)
from pytest_smallmodel.drift import explanation
from pytest_smallmodel.drift.reports import DriftLog
from pytest_smallmodel.drift.rules import DriftPolicy, compare
from pytest_smallmodel.drift.topk import agreement_of, shared_support_kl
from pytest_smallmodel.goldens.kinds import record_of
from pytest_smallmodel.plugin.golden import parse_golden, serialize_record

SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OLD = {"version": 1, "model": "m", "sha256": SHA, "llama_cpp_python": "0.3.16"}
NEW = {**OLD, "llama_cpp_python": "0.3.36"}
VOCAB = {0: "<end>", 1: "A", 2: " b", 3: " c", 4: " d", 5: " e"}


def top(*pairs: tuple[int, float]) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(t, VOCAB[t], lp) for t, lp in pairs)


def step(token: int, *pairs: tuple[int, float]) -> Step:
    alternatives = top(*pairs)
    return Step(
        token, VOCAB[token], next(t.logprob for t in alternatives if t.token == token), alternatives
    )


def generation(
    steps: Sequence[Step], fingerprint: dict[str, Any], scorer: Any = None
) -> Generation:
    request = Request("generate", "p", (7,), {"n_ctx": 64}, max_tokens=8)
    return Generation(
        "".join(s.text for s in steps if s.token != 0),
        tokens=[s.token for s in steps],
        steps=steps,
        finish_reason="stop",
        timings=Timings(1.0, 1.0, len(steps)),
        provenance=Provenance("m", SHA, request, fingerprint, scorer),
    )


def kl_by_hand(p: dict[int, float], q: dict[int, float]) -> float:
    """The definition with probabilities rather than logprobs: restrict both to the shared
    tokens, divide by their totals, sum p * log(p / q)."""
    shared = [t for t in p if t in q]
    p_total = sum(math.exp(p[t]) for t in shared)
    q_total = sum(math.exp(q[t]) for t in shared)
    result = 0.0
    for t in shared:
        pi, qi = math.exp(p[t]) / p_total, math.exp(q[t]) / q_total
        result += pi * math.log(pi / qi)
    return result


def test_kl_of_identical_lists_is_zero() -> None:
    lists = top((1, -0.2), (2, -1.9), (3, -3.0))
    assert shared_support_kl(lists, lists) == (pytest.approx(0.0, abs=1e-15), 3)


def test_kl_is_renormalised_over_the_tokens_both_lists_hold() -> None:
    golden = {1: -0.1, 2: -2.0, 3: -3.5}  # token 3 only in the golden's list
    current = {1: -0.5, 2: -1.0, 4: -1.2}  # token 4 only in this run's
    kl, shared = shared_support_kl(top(*golden.items()), top(*current.items()))
    assert shared == 2
    assert kl == pytest.approx(kl_by_hand(golden, current), rel=1e-12)
    assert kl > 0
    # Scaling a whole list (a constant shift of its logprobs) does not move a renormalised KL.
    shifted = {t: lp - 0.7 for t, lp in current.items()}
    assert shared_support_kl(top(*golden.items()), top(*shifted.items()))[0] == pytest.approx(kl)


def test_kl_with_one_or_no_shared_token() -> None:
    assert shared_support_kl(top((1, -0.1), (2, -2.0)), top((1, -3.0), (3, -0.1))) == (0.0, 1)
    assert shared_support_kl(top((1, -0.1)), top((2, -0.1))) == (None, 0)


GOLDEN = [
    step(1, (1, -0.01), (3, -5.0)),
    step(2, (2, -0.60), (5, -0.80), (3, -2.0)),
    step(4, (4, -0.2), (5, -3.0)),
    step(0, (0, -0.05), (5, -4.0)),
]
LIVE = [  # took " e" at step 1, a near tie of the golden run
    GOLDEN[0],
    step(5, (5, -0.55), (2, -0.70), (3, -2.0)),
    step(4, (4, -0.1), (5, -2.5)),
    step(0, (0, -0.05), (5, -4.0)),
]


def forced_scorer(request: Request, tokens: Sequence[int]) -> list[ScoredStep]:
    """This run's ratings of the golden tokens: after step 1, at the golden's own contexts."""
    rated = []
    for index, token in enumerate(tokens):
        alternatives = LIVE[1].top if index == 1 else GOLDEN[index].top
        golden = next(t for t in alternatives if t.token == token)
        rated.append(ScoredStep(index, golden, alternatives[0], alternatives))
    return rated


def test_verdict_carries_kl_and_agreement_at_the_golden_contexts() -> None:
    golden = parse_golden(serialize_record(record_of(generation(GOLDEN, OLD))), path="g.json")
    verdict = compare(
        golden,
        generation(LIVE, NEW, forced_scorer),
        policy=DriftPolicy(),
        golden_path="golden/t.json",
    )
    agreement = verdict.agreement
    assert verdict.passed and agreement is not None
    assert agreement.divergent_step == 1
    # Steps 0 and 1 from this run's decode, 2 and 3 from teacher forcing (the golden's contexts:
    # this run's own step 2 followed " e" and is not compared).
    assert [s.index for s in agreement.steps] == [0, 1, 2, 3]
    at = agreement.at_divergence
    assert at is not None and not at.top_agrees and at.shared == 3
    expected = kl_by_hand(
        {t.token: t.logprob for t in GOLDEN[1].top}, {t.token: t.logprob for t in LIVE[1].top}
    )
    assert at.kl == pytest.approx(expected, rel=1e-9)
    assert agreement.top_agreement == pytest.approx(3 / 4)
    assert agreement.mean_kl == pytest.approx(expected / 4, rel=1e-9)

    text = explanation.text(verdict)
    assert "KL over the shared top-k support" in text
    assert "top token agrees on 3 of 4 (75.0%)" in text
    assert f"at the first divergent step 1: KL {expected:.4f} over 3 shared token(s)" in text
    assert text.index("margin: actual over golden") < text.index("top-k agreement")


def test_json_and_markdown_reports_carry_the_agreement(tmp_path: Path) -> None:
    golden = parse_golden(serialize_record(record_of(generation(GOLDEN, OLD))), path="g.json")
    verdict = compare(
        golden, generation(LIVE, NEW, forced_scorer), policy=DriftPolicy(), golden_path="g.json"
    )
    same = compare(golden, generation(GOLDEN, OLD), policy=DriftPolicy(), golden_path="h.json")
    log = DriftLog()
    log.add(verdict, test="t::near")
    log.add(same, test="t::same")
    report = written_report(log, tmp_path)
    near, identical = report["verdicts"]
    assert near["topk_agreement"]["divergent_step"] == 1
    assert near["topk_agreement"]["top_agreement"] == pytest.approx(0.75)
    assert near["topk_agreement"]["at_divergence"]["top_agrees"] is False
    # The golden stores logprobs rounded to 4 decimals: an identical run is a KL of rounding.
    assert identical["topk_agreement"]["top_agreement"] == 1.0
    assert identical["topk_agreement"]["max_kl"] < 1e-6
    markdown = log.markdown()
    assert "Top-k: top-k agreement with the golden" in markdown


def test_no_agreement_without_top_k_lists() -> None:
    bare = [Step(s.token, s.text, s.logprob, ()) for s in GOLDEN]
    assert agreement_of(bare, bare) is None
