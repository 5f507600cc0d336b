"""A ``Verdict`` as the text a failing test shows: headline, then the evidence.

Only rendering lives here; every number comes from the verdict (``drift.py`` decided). The same
lines go into the terminal, the Markdown report and ``smallmodel review``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_smallmodel.common.results import TokenLogprob
from pytest_smallmodel.drift import evaluation_rules
from pytest_smallmodel.drift.verdict import Mode, PromptChange, Reason, Verdict
from pytest_smallmodel.goldens.records import GoldenRecord

# How many steps above tolerance a report lists before summarising the rest.
_WORST_STEPS_SHOWN = 5


def headline(verdict: Verdict) -> str:
    """One sentence: what was decided and the number that decided it."""
    golden, current = verdict.golden, verdict.current
    reason = verdict.reason
    if reason is Reason.CORRUPT:
        return f"golden {verdict.golden_path} cannot be used: {verdict.problem}"
    if reason is Reason.MISSING:
        return f"no golden at {verdict.golden_path}: run `pytest --snapshot-update` to record it"
    assert golden is not None and current is not None
    if verdict.evaluation is not None:
        return evaluation_rules.headline(verdict)
    tolerance = _nats(verdict.tolerance or 0.0)
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
    if reason is Reason.VALUE_DIFFERS:
        return "value differs from the golden"
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
    if verdict.labels is not None:
        return _label_headline(verdict, tolerance)
    if verdict.embedding is not None:
        return _embedding_headline(verdict)
    divergence = verdict.divergence
    assert divergence is not None
    step = divergence.step
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
        refused = f" {_token(forcing.worst.golden)}" if forcing is not None else ""
        return (
            f"teacher forcing stopped at step {scored - 1}: this run cannot produce the "
            f"golden token{refused} there (grammar or context)"
        )
    assert forcing is not None
    worst = forcing.worst
    if reason is Reason.WITHIN_TOLERANCE:
        return (
            f"passed within tolerance: diverged at step {step}; every golden token "
            f"stays within {tolerance} nats of the best (max gap {worst.gap:.4f} at step "
            f"{worst.index})"
        )
    return (
        f"drift beyond tolerance: at step {worst.index} the golden token "
        f"{_token(worst.golden)} is {worst.gap:.4f} nats below the best token "
        f"{_token(worst.best)} (tolerance {tolerance})"
    )


def _label_headline(verdict: Verdict, tolerance: str) -> str:
    labels = verdict.labels
    assert labels is not None
    old, new = labels.golden_label, labels.current_label
    if verdict.reason is Reason.LABEL_CHANGED:
        return f"label changed from {old!r} to {new!r}"
    if verdict.reason is Reason.WITHIN_TOLERANCE:
        return (
            f"passed within tolerance: this run chose {new!r} over the golden {old!r} by "
            f"{labels.margin:.4f} nats (tolerance {tolerance})"
        )
    return (
        f"drift beyond tolerance: label changed from {old!r} to {new!r} by "
        f"{labels.margin:.4f} nats (tolerance {tolerance})"
    )


def _embedding_headline(verdict: Verdict) -> str:
    scores = verdict.embedding
    assert scores is not None
    if verdict.reason is Reason.DIMENSIONS_CHANGED:
        return f"embedding dimension changed from {scores.golden_dimensions} to {scores.dimensions}"
    if verdict.reason is Reason.EMBEDDING_DIFFERS:
        return "embedding differs from the golden " + (
            "(strict mode)" if verdict.mode is Mode.STRICT else "under the same fingerprint"
        )
    comparison = ">=" if verdict.reason is Reason.WITHIN_TOLERANCE else "<"
    prefix = (
        "passed within tolerance"
        if verdict.reason is Reason.WITHIN_TOLERANCE
        else "drift beyond tolerance"
    )
    return f"{prefix}: cosine similarity {scores.cosine:.6f} {comparison} {scores.min_cosine:g}"


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
    check = verdict.batched
    if check is not None and not check.passed and verdict.mode is Mode.TOLERANCE:
        lines.append(
            "decided by: incremental decoding, because the batched teacher-forced pass "
            f"failed ({check.describe()})"
        )
    lines += _evidence(verdict)
    if verdict.changed:
        lines += ["fingerprint fields that changed (golden -> this run):"]
        lines += [f"  {change.describe()}" for change in verdict.changed]
    return lines


def _mode(verdict: Verdict) -> str:
    if verdict.mode is Mode.EXACT:
        return "exact (same model, request and fingerprint: identical output required)"
    if verdict.mode is Mode.STRICT:
        return "strict (--smallmodel-strict: identical output required)"
    return f"tolerance {_nats(verdict.tolerance or 0.0)} nats (the fingerprint changed)"


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
    if verdict.evaluation is not None:
        return evaluation_rules.evidence(verdict, headline)
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
        from pytest_smallmodel.drift.rules import normalized_request

        old, new = normalized_request(golden), normalized_request(current)
        return [
            "request diff (golden -> this run):",
            *unified(pretty(old), pretty(new)),
            *output_diff(golden, current),
        ]
    if reason is Reason.VALUE_DIFFERS:
        lines = ["diff (golden -> this run):", *output_diff(golden, current)]
        if golden.kind == "value":
            lines += deepdiff_lines(golden.value, current.value)
        return lines
    if verdict.labels is not None:
        return _label_lines(verdict)
    if verdict.embedding is not None:
        scores = verdict.embedding
        if scores.cosine is None or scores.max_abs_difference is None:
            return []
        return [
            f"cosine similarity {scores.cosine:.6f} (threshold {scores.min_cosine:g}); "
            f"max absolute difference {scores.max_abs_difference:.6g} over "
            f"{scores.dimensions} dimensions"
        ]
    return _divergence_lines(verdict)


def _label_lines(verdict: Verdict) -> list[str]:
    labels = verdict.labels
    assert labels is not None
    old, new = labels.golden_logprobs, labels.current_logprobs
    lines = ["labels (logprob in the golden run -> this run):"]
    for name in new or old:
        marks = [
            mark
            for mark, label in (("golden", labels.golden_label), ("this run", labels.current_label))
            if label == name
        ]
        lines.append(
            f"  {name!r}: {_lp(old.get(name))} -> {_lp(new.get(name))}"
            + (f"  <- {' and '.join(marks)}" if marks else "")
        )
    lines.append(
        f"margin this run: {labels.current_label!r} is {labels.margin:.4f} nats above the "
        f"golden label {labels.golden_label!r}"
    )
    return lines


def _divergence_lines(verdict: Verdict) -> list[str]:
    golden, current, divergence = verdict.golden, verdict.current, verdict.divergence
    assert golden is not None and current is not None and divergence is not None
    step = divergence.step
    lines = [
        f"first divergent step: {step} (character {divergence.char_offset} of the golden text)"
    ]
    golden_step, live_step = divergence.golden_step, divergence.live_step
    golden_now, actual_then = divergence.golden_now, divergence.actual_then
    if golden_step is not None:
        lines.append(
            f"  golden token   {golden_step.text!r} (id {golden_step.token}): logprob "
            f"{_lp(golden_step.logprob)} in the golden run, {_lp(golden_now)} in this run"
        )
    else:
        lines.append(
            f"  golden token   none: the golden ends after {len(golden.tokens)} tokens "
            f"(finish_reason {golden.finish_reason})"
        )
    if live_step is not None:
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
        lines.append(f"  top-5 at step {step}, this run:   {_top_line(live_step.top)}")
    if golden_step is not None:
        lines.append(f"  top-5 at step {step}, golden run: {_top_line(golden_step.top)}")
    if verdict.forcing is not None:
        lines += _forcing_lines(verdict)
    lines += ["text diff (golden -> this run):", *unified_text(golden.text, current.text)]
    if golden.kind == "extraction":
        lines += structured_lines(golden, current)
    return lines


def _forcing_lines(verdict: Verdict) -> list[str]:
    forcing = verdict.forcing
    assert forcing is not None
    tolerance = _nats(forcing.tolerance)
    worst, above = forcing.worst, forcing.above
    lines = [
        f"teacher-forcing the golden tokens from step {forcing.steps[0].index} on this run "
        f"({len(forcing.steps)} steps): max gap {worst.gap:.4f} nats at step {worst.index}; "
        f"{len(above)} step(s) above tolerance {tolerance}"
    ]
    for step in sorted(above, key=lambda s: -s.gap)[:_WORST_STEPS_SHOWN]:
        lines.append(
            f"  step {step.index}: golden {_token(step.golden)} {_lp(step.golden.logprob)} vs "
            f"best {_token(step.best)} {_lp(step.best.logprob)}: gap {step.gap:.4f}"
        )
    if len(above) > _WORST_STEPS_SHOWN:
        lines.append(f"  ... and {len(above) - _WORST_STEPS_SHOWN} more")
    return lines


# -- shared text helpers (also used by `smallmodel compare`) ---------------------------------------


def output_diff(golden: GoldenRecord, current: GoldenRecord) -> list[str]:
    if golden.kind in ("generation", "extraction", "text") and current.kind == golden.kind:
        return ["output diff (golden -> this run):", *unified_text(golden.text, current.text)]
    return ["output diff (golden -> this run):", *unified(_summary(golden), _summary(current))]


def unified(old: Sequence[str], new: Sequence[str]) -> list[str]:
    diff = list(difflib.unified_diff(list(old), list(new), "golden", "this run", lineterm="", n=2))
    return [f"  {line}" for line in diff] or ["  (no difference)"]


def unified_text(old: str | None, new: str | None) -> list[str]:
    old_lines, new_lines = (old or "").split("\n"), (new or "").split("\n")
    if old == new:
        return ["  (texts are identical; the token sequences differ)"]
    return unified(old_lines, new_lines)


def pretty(value: Any, indent: str = "") -> list[str]:
    """JSON-like lines for diffs: one field per line, scalar lists inline, long text as lines."""
    inner = indent + "  "
    if isinstance(value, Mapping) and value:
        lines = [f"{indent}{{"]
        for key, item in value.items():
            body = pretty(item, inner)
            lines.append(f"{inner}{json.dumps(key)}: {body[0].lstrip()}")
            lines += body[1:]
        return [*lines, f"{indent}}}"]
    if isinstance(value, str) and "\n" in value:
        value = value.split("\n")
    if isinstance(value, list) and value and not all(_is_scalar(v) for v in value):
        return [f"{indent}[", *[line for v in value for line in pretty(v, inner)], f"{indent}]"]
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
    return pretty(record.value)


def deepdiff_lines(old: Any, new: Any) -> list[str]:
    from deepdiff import DeepDiff

    diff = DeepDiff(old, new, verbose_level=2)
    if not diff:
        return []
    return [
        "changed fields (deepdiff):",
        *[f"  {line}" for line in str(diff.pretty()).splitlines()],
    ]


def structured_lines(golden: GoldenRecord, current: GoldenRecord) -> list[str]:
    import jsonschema

    values: list[Any] = []
    lines: list[str] = []
    for name, record in (("golden", golden), ("this run", current)):
        try:
            values.append(json.loads(record.text or ""))
        except json.JSONDecodeError as error:
            values.append(None)
            lines.append(f"{name} output is not JSON: {error}")
    lines += deepdiff_lines(values[0], values[1])
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


def _nats(value: float) -> str:
    return f"{value:.2f}"


def _lp(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _token(token: TokenLogprob) -> str:
    return f"{token.text!r} (id {token.token})"


def _top_line(top: Sequence[TokenLogprob]) -> str:
    return " | ".join(f"{t.text!r} {t.logprob:.4f}" for t in top[:5]) or "n/a"
