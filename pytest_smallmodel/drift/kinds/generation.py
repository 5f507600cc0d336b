"""How a generation is judged: token by token, teacher-forcing the golden tokens in tolerance mode.

Rules 3 and 4 of ``drift.rules`` for token sequences: identical tokens pass; otherwise the first
divergent step is found and, in tolerance mode, the golden tokens are scored on this run
(teacher forcing) and must each stay within the tolerance of the best token. Its evidence is
that step, the top-k on both sides, the forced gaps and a text diff. Extractions reuse all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.results import generation_of
from pytest_smallmodel.drift.kinds.base import KindDefaults
from pytest_smallmodel.drift.text import (
    OUTPUT_DIFF,
    agreement_summary,
    lp,
    nats,
    token,
    top_line,
    unified_text,
)
from pytest_smallmodel.drift.verdict import Divergence, Forcing, Mode, Outcome, Reason
from pytest_smallmodel.goldens.document import quoted

if TYPE_CHECKING:
    from pytest_smallmodel.common.results import Generation, ScoredStep, TokenLogprob
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer
    from pytest_smallmodel.drift.verdict import Verdict
    from pytest_smallmodel.goldens.records import GoldenRecord

# How many steps above tolerance a report lists before summarising the rest.
_WORST_STEPS_SHOWN = 5


class GenerationKind(KindDefaults):
    kind = "generation"
    requests = ("generate", "chat")

    def compare(self, check: Check) -> Verdict:
        golden, current = check.golden, check.current
        step = first_difference(golden.tokens, current.tokens)
        if step is None:
            problem = text_problem(golden, current, model=current.model_ref)
            if problem is not None:
                return check.corrupt(problem)
        batched = check.batched_check()
        if batched is not None and batched.passed and step is None:
            if not check.tolerant:  # the engine checks in tolerance mode only; never call it exact
                return check.decide(Outcome.MISMATCH, False, Reason.BATCHED_OUTSIDE_TOLERANCE)
            return check.decide(Outcome.TOLERATED, True, Reason.BATCHED_PASS)
        if step is None:
            return check.identical()
        scored = _score_golden_tokens(check)
        problem = _forced_pieces_problem(check, scored)
        if problem is not None:
            return check.corrupt(problem)
        found: dict[str, Any] = {"divergence": _divergence(check, step, scored)}
        if scored is not None and step < len(scored):
            found["forcing"] = Forcing(tuple(scored[step:]), check.tolerance)
        forcing: Forcing | None = found.get("forcing")
        if check.tolerant:
            if scored is None:
                return check.decide(Outcome.DRIFT, False, Reason.NOT_SCORABLE, **found)
            if step >= len(golden.tokens):
                return check.decide(Outcome.DRIFT, False, Reason.GOLDEN_ENDED, **found)
            if forcing is None or len(scored) < len(golden.tokens):
                return check.decide(Outcome.DRIFT, False, Reason.FORCING_STOPPED, **found)
        within = forcing is not None and forcing.worst.gap <= check.tolerance
        return check.judge(within, Reason.TOKENS_DIFFER, **found)

    def forced_result(self, generation: Generation) -> object | None:
        return generation

    def headline(self, verdict: Verdict) -> str:
        golden, current, divergence = verdict.golden, verdict.current, verdict.divergence
        assert golden is not None and current is not None and divergence is not None
        step = divergence.step
        reason = verdict.reason
        if reason is Reason.TOKENS_DIFFER:
            return f"output differs from the golden from step {step} " + (
                "(strict mode: identical tokens required)"
                if verdict.mode is Mode.STRICT
                else "under the same model, request and fingerprint (exact mode)"
            )
        if reason is Reason.NOT_SCORABLE:
            limitations = (current.fingerprint or {}).get("limitations") or []
            why = (
                f"a limitation of this backend: {limitations[0]}"
                if limitations
                else "the result carries no live scorer (cached or unpickled result)"
            )
            return f"output diverged at step {step} and cannot be teacher-forced: {why}"
        if reason is Reason.GOLDEN_ENDED:
            return (
                f"the golden ends at step {step} (finish_reason {golden.finish_reason}) "
                f"but this run continued (finish_reason {current.finish_reason})"
            )
        forcing = verdict.forcing
        if reason is Reason.FORCING_STOPPED:
            scored = len(forcing.steps) + step if forcing is not None else step
            refused = f" {token(forcing.worst.golden)}" if forcing is not None else ""
            return (
                f"teacher forcing stopped at step {scored - 1}: this run cannot produce the "
                f"golden token{refused} there (grammar or context)"
            )
        assert forcing is not None
        worst = forcing.worst
        tolerance = nats(verdict.tolerance or 0.0)
        if reason is Reason.WITHIN_TOLERANCE:
            return (
                f"passed within tolerance: diverged at step {step}; every golden token "
                f"stays within {tolerance} nats of the best (max gap {worst.gap:.4f} at step "
                f"{worst.index})"
            )
        return (
            f"drift beyond tolerance: at step {worst.index} the golden token "
            f"{token(worst.golden)} is {worst.gap:.4f} nats below the best token "
            f"{token(worst.best)} (tolerance {tolerance})"
        )

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        golden, current, divergence = verdict.golden, verdict.current, verdict.divergence
        assert golden is not None and current is not None and divergence is not None
        return [
            *_divergence_lines(golden, current, divergence),
            *(_forcing_lines(verdict.forcing) if verdict.forcing is not None else []),
            *agreement_lines(verdict),
            "text diff (golden -> this run):",
            *unified_text(golden.text, current.text),
        ]

    def summary(self, record: GoldenRecord) -> list[str]:
        return (record.text or "").split("\n")

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified_text(golden.text, current.text)]

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        request = record.request or {}
        stop = request.get("stop")
        if request["kind"] == "generate":
            return model.generate(
                str(request["prompt"]), max_tokens=request["max_tokens"], stop=stop
            )
        return model.chat(record.prompt_source, max_tokens=request["max_tokens"], stop=stop)


# -- the comparison's parts -------------------------------------------------------------------


def _forced_pieces_problem(check: Check, scored: Sequence[ScoredStep] | None) -> str | None:
    """Teacher forcing read the golden's token ids with this model: their texts must be the
    golden's step texts (same model file, same engine: same pieces)."""
    if scored is None or not _same_engine(check.golden, check.current):
        return None
    for forced, step in zip(scored, check.golden.steps, strict=False):
        if forced.golden.text != step.text:
            return _step_text_problem(
                forced.index, step.token, step.text, forced.golden.text, check.current.model_ref
            )
    return None


def _score_golden_tokens(check: Check) -> list[ScoredStep] | None:
    generation = generation_of(check.live)
    if generation is None or generation.provenance.scorer is None:
        return None
    return generation.provenance.scorer(generation.provenance.request, check.golden.tokens)


def _divergence(check: Check, step: int, scored: Sequence[ScoredStep] | None) -> Divergence:
    golden = check.golden
    generation = generation_of(check.live)
    live_steps = generation.steps if generation is not None else check.current.steps
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
    return bool(golden.engine == current.engine)


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def logprob_of(top: Sequence[TokenLogprob], token: int) -> float | None:
    """``token``'s logprob in a stored top-k list (None: it was not among them)."""
    return next((t.logprob for t in top if t.token == token), None)


# -- the evidence ------------------------------------------------------------------------------


def _divergence_lines(
    golden: GoldenRecord, current: GoldenRecord, divergence: Divergence
) -> list[str]:
    step = divergence.step
    lines = [
        f"first divergent step: {step} (character {divergence.char_offset} of the golden text)"
    ]
    golden_step, live_step = divergence.golden_step, divergence.live_step
    golden_now, actual_then = divergence.golden_now, divergence.actual_then
    if golden_step is not None:
        lines.append(
            f"  golden token   {golden_step.text!r} (id {golden_step.token}): logprob "
            f"{lp(golden_step.logprob)} in the golden run, {lp(golden_now)} in this run"
        )
    else:
        lines.append(
            f"  golden token   none: the golden ends after {len(golden.tokens)} tokens "
            f"(finish_reason {golden.finish_reason})"
        )
    if live_step is not None:
        lines.append(
            f"  actual token   {live_step.text!r} (id {live_step.token}): logprob "
            f"{lp(actual_then)} in the golden run, {lp(live_step.logprob)} in this run"
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
        lines.append(f"  top-5 at step {step}, this run:   {top_line(live_step.top)}")
    if golden_step is not None:
        lines.append(f"  top-5 at step {step}, golden run: {top_line(golden_step.top)}")
    return lines


def _forcing_lines(forcing: Forcing) -> list[str]:
    tolerance = nats(forcing.tolerance)
    worst, above = forcing.worst, forcing.above
    lines = [
        f"teacher-forcing the golden tokens from step {forcing.steps[0].index} on this run "
        f"({len(forcing.steps)} steps): max gap {worst.gap:.4f} nats at step {worst.index}; "
        f"{len(above)} step(s) above tolerance {tolerance}"
    ]
    for step in sorted(above, key=lambda s: -s.gap)[:_WORST_STEPS_SHOWN]:
        lines.append(
            f"  step {step.index}: golden {token(step.golden)} {lp(step.golden.logprob)} vs "
            f"best {token(step.best)} {lp(step.best.logprob)}: gap {step.gap:.4f}"
        )
    if len(above) > _WORST_STEPS_SHOWN:
        lines.append(f"  ... and {len(above) - _WORST_STEPS_SHOWN} more")
    return lines


KIND = GenerationKind()


def agreement_lines(verdict: Verdict) -> list[str]:
    """The top-k agreement next to the margins, unless the run is plainly identical."""
    if verdict.agreement is None or (verdict.reason is Reason.IDENTICAL and not verdict.changed):
        return []
    return [agreement_summary(verdict.agreement.to_dict())]
