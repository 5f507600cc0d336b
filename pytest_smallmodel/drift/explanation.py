"""A ``Verdict`` as the text a failing test shows: headline, then the evidence.

Only rendering lives here; every number comes from the verdict (``rules`` decided). The reasons
every kind shares (corrupt, missing, identical, another kind, model or request, the batched pass)
are worded here; the rest is the kind's own (``drift/kinds/``: its headline and evidence). The
same lines go into the terminal, the Markdown report and ``smallmodel review``.
"""

from __future__ import annotations

from pytest_smallmodel.common.fingerprint import normalized_request
from pytest_smallmodel.drift.calibration import Triage, TriageLabel
from pytest_smallmodel.drift.kinds import KINDS
from pytest_smallmodel.drift.kinds.generation import agreement_lines
from pytest_smallmodel.drift.text import (
    OUTPUT_DIFF,
    deepdiff_lines,
    nats,
    pretty,
    structured_lines,
    unified,
    unified_text,
)
from pytest_smallmodel.drift.verdict import Mode, PromptChange, Reason, Verdict
from pytest_smallmodel.goldens.records import GoldenRecord


def headline(verdict: Verdict) -> str:
    """One sentence: what was decided and the number that decided it."""
    golden, current = verdict.golden, verdict.current
    reason = verdict.reason
    if reason is Reason.CORRUPT:
        return f"golden {verdict.golden_path} cannot be used: {verdict.problem}"
    if reason is Reason.MISSING:
        return f"no golden at {verdict.golden_path}: run `pytest --snapshot-update` to record it"
    assert golden is not None and current is not None
    if reason is not Reason.KIND_CHANGED and not KINDS[golden.kind].shared_wording:
        return KINDS[golden.kind].headline(verdict)
    tolerance = nats(verdict.tolerance or 0.0)
    if reason is Reason.IDENTICAL:
        if verdict.changed:
            return "identical to the golden under a changed fingerprint"
        return "identical to the golden"
    if reason is Reason.KIND_CHANGED:
        return (
            f"the golden holds a {golden.kind} but the test now asserts a {current.kind}: "
            "review and run --snapshot-update"
        )
    if reason is Reason.MODEL_CHANGED:
        return (
            f"golden recorded with {golden.model_ref}, this run uses {current.model_ref}: "
            "review the outputs and run --snapshot-update"
        )
    if reason is Reason.REQUEST_CHANGED:
        return (
            "the test's input changed since the golden was recorded: "
            "review the request and output diffs, then run --snapshot-update"
        )
    if reason is Reason.BATCHED_OUTSIDE_TOLERANCE:
        return "this result was verified by a batched pass, which only tolerance mode accepts"
    if reason is Reason.BATCHED_PASS:
        check = verdict.batched
        assert check is not None
        kind = "teacher-forced request" if check.incremental else "batched pass"
        return (
            f"passed within tolerance ({kind}): every golden token stays within "
            f"{tolerance} nats of the best (max gap {check.max_gap:.4f} at step "
            f"{check.worst_step})"
        )
    return KINDS[golden.kind].headline(verdict)


def lines(verdict: Verdict) -> tuple[str, ...]:
    """What a failing assertion shows under its headline (and what a pending result keeps)."""
    return tuple(explain(verdict))


def text(verdict: Verdict) -> str:
    return "\n".join(explain(verdict))


def explain(verdict: Verdict) -> list[str]:
    """The whole report: headline, where, mode, evidence, changed fingerprint fields."""
    if verdict.reason is Reason.CORRUPT:
        return [
            headline(verdict),
            "run `pytest --snapshot-update` to replace it with this run's result",
        ]
    if verdict.reason is Reason.MISSING:
        return [headline(verdict)]
    lines = [headline(verdict), f"golden: {verdict.golden_path}"]
    if verdict.model is not None:
        lines.append(f"model: {verdict.model}")
    if verdict.model_identity == "unverified":
        lines.append(
            f"model identity unverified: this result came from a running server "
            f"({verdict.current_engine}), which cannot prove it serves the pinned file"
        )
    if verdict.mode is not None:
        lines.append(f"mode: {_mode(verdict)}")
    if verdict.prompt_change is not None:
        lines.append(_prompt_note(verdict.prompt_change))
    if verdict.triage is not None:
        lines += triage_lines(verdict.triage)
    check = verdict.batched
    if check is not None and not check.passed and verdict.mode is Mode.TOLERANCE:
        lines.append(
            "decided by: incremental decoding, because the batched teacher-forced pass "
            f"failed ({check.describe()})"
        )
    lines += _evidence(verdict)
    if verdict.divergence is None and verdict.reason is not Reason.REQUEST_CHANGED:
        lines += agreement_lines(verdict)
    if verdict.changed:
        lines += ["fingerprint fields that changed (golden -> this run):"]
        lines += [f"  {change.describe()}" for change in verdict.changed]
    return lines


def _mode(verdict: Verdict) -> str:
    if verdict.mode is Mode.EXACT:
        return "exact (same model, request and fingerprint: identical output required)"
    if verdict.mode is Mode.STRICT:
        return "strict (--smallmodel-strict: identical output required)"
    return f"tolerance {nats(verdict.tolerance or 0.0)} nats (the fingerprint changed)"


def _prompt_note(change: PromptChange) -> str:
    what = (
        "the rendered chat prompt and its token ids changed although the messages did not"
        if change is PromptChange.RENDERED_CHAT
        else "the prompt token ids changed although the prompt text did not"
    )
    return (
        f"note: {what}: the runtime's tokenizer or template rendering changed; "
        "treated as fingerprint drift, not as a change of the test's input"
    )


def _evidence(verdict: Verdict) -> list[str]:
    golden, current = verdict.golden, verdict.current
    assert golden is not None and current is not None
    reason = verdict.reason
    if reason is not Reason.KIND_CHANGED and not KINDS[golden.kind].shared_wording:
        return KINDS[golden.kind].evidence(verdict, headline)
    if reason is Reason.IDENTICAL:
        return []
    if reason in (Reason.BATCHED_PASS, Reason.BATCHED_OUTSIDE_TOLERANCE):
        tokens = len(verdict.batched.tokens) if verdict.batched is not None else 0
        if verdict.batched is not None and verdict.batched.incremental:
            return [
                "decided by: one teacher-forced request over the prompt and the "
                f"{tokens} golden tokens (this backend has no batched pass; nothing was "
                "decoded freely; docs/backends.md)"
            ]
        return [
            "decided by: one batched teacher-forced pass over the prompt and the "
            f"{tokens} golden tokens (nothing was decoded; docs/drift.md)"
        ]
    if reason in (Reason.KIND_CHANGED, Reason.MODEL_CHANGED):
        return output_diff(golden, current)
    if reason is Reason.REQUEST_CHANGED:
        old = normalized_request(golden.request or {})
        new = normalized_request(current.request or {})
        return [
            "request diff (golden -> this run):",
            *unified(pretty(old), pretty(new)),
            *output_diff(golden, current),
        ]
    return KINDS[golden.kind].evidence(verdict, headline)


def triage_lines(triage: Triage) -> list[str]:
    """What --smallmodel-triage found, in the words of docs/drift.md."""
    where = f" at step {triage.step}" if triage.step is not None else " (label)"
    if triage.label is TriageLabel.UNDECIDED:
        line = "triage: undecided: no benign variant could be measured here"
    elif triage.label is TriageLabel.NUMERICAL:
        line = (
            "triage: numerical: the golden's tokens are within the benign spread measured here "
            f"(largest benign gap {triage.benign_gap:.4f}, this run's gap {triage.run_gap:.4f})"
        )
    else:
        line = (
            "triage: behavioural: stable under every benign variant, and this run departs by "
            f"{triage.run_gap:.4f} nats{where} (largest benign gap {triage.benign_gap:.4f})"
        )
    lines = [line]
    if triage.variants:
        lines.append("  benign variants replayed: " + ", ".join(triage.variants))
    lines += [f"  could not run here: {item}" for item in triage.unavailable]
    return lines


# -- shared text helpers (also used by `smallmodel compare`) ---------------------------------------


def output_diff(golden: GoldenRecord, current: GoldenRecord) -> list[str]:
    if current.kind == golden.kind:
        return KINDS[golden.kind].diff(golden, current)
    old, new = KINDS[golden.kind].summary(golden), KINDS[current.kind].summary(current)
    return [OUTPUT_DIFF, *unified(old, new)]


__all__ = [
    "deepdiff_lines",
    "explain",
    "headline",
    "lines",
    "output_diff",
    "pretty",
    "structured_lines",
    "text",
    "unified",
    "unified_text",
]
