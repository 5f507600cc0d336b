"""How a ``compare_report.CompareReport`` reads: Markdown, one HTML page, JSON data.

``compare.py`` replays and measures; this module only renders what it found.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from pytest_smallmodel.cli.compare_report import (
    AccuracyComparison,
    CaseResult,
    CompareReport,
    Figures,
    PairedCase,
)

DIVERGENCE_NOTE = (
    "divergence: for each step whose prefix is the same in both runs (up to and including the "
    "first divergent step), the mean absolute difference of logprob over the tokens present in "
    "both runs' stored top-k lists; tokens outside either top-k are not counted, and OLD's "
    "logprobs are the golden's, rounded to 4 decimals. Mean over all such steps of all "
    "generations and extractions; largest single step."
)
OLD_FIGURES_NOTE = (
    "OLD's speed, latency, load time and memory are measured by replaying the same requests on "
    "OLD when models.lock still pins its file and the file is present; goldens do not store "
    "them. Latency is the wall time of one replayed call, the first (which loads the model) "
    "left out; peak memory is each model's engine worker's peak resident set (VmHWM) where the "
    "system reports it, else this process's peak over all models."
)
ACCURACY_NOTE = (
    "accuracy: both models scored against the evaluation golden's expected values, OLD from "
    "the results its golden stores, NEW by replaying each case's stored model call; 95 % Wilson "
    "intervals. won: only NEW is right; lost: only OLD is right. p: exact McNemar test on the "
    "won and lost cases (two-sided)."
)
_DIAGONAL = " style='background:#dfe'"  # a confusion matrix's right answers
# How a paired case is coloured in the HTML report.
_OUTCOME_COLOURS = {
    "won": "#c8f0c8",
    "lost": "#f6c6c6",
    "both wrong": "#e0e0e0",
    "both right": "#ffffff",
}


def to_dict(report: CompareReport) -> dict[str, Any]:
    """The report as JSON data (``smallmodel compare --json``)."""
    return {
        "old": report.old,
        "new": report.new,
        "new_sha256": report.new_sha256,
        "figures": {**asdict(report.figures), "identical_share": report.figures.identical_share},
        "notes": [DIVERGENCE_NOTE, OLD_FIGURES_NOTE, ACCURACY_NOTE],
        "cases": [_case_dict(case) for case in report.cases],
        "accuracy": [_accuracy_dict(comparison) for comparison in report.accuracy],
        "gates": [asdict(gate) for gate in report.gates],
        "failed": bool(report.unusable or report.failed_gates),
        "skipped_goldens": report.skipped,
        "pending_written": report.pending_written,
    }


def markdown(report: CompareReport) -> str:
    """The report as Markdown (what ``smallmodel compare`` prints)."""
    f = report.figures
    out = [
        f"# smallmodel compare {report.old} -> {report.new}",
        "",
        f"NEW is `{report.new}@{report.new_sha256[:8]}`. {f.cases} golden(s) replayed"
        + (
            f", {len(report.accuracy)} evaluation golden(s) scored against their expected values."
            if report.accuracy
            else "."
        ),
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    if f.cases:
        out.append(
            f"| identical outputs | {f.identical}/{f.cases} ({100 * f.identical_share:.1f} %) |"
        )
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
    if out[-1] == "| --- | --- |":  # only evaluation goldens: no agreement figures
        del out[-3:]
    out += ["", *_gate_lines(report), "| speed and memory | OLD | NEW |", "| --- | --- | --- |"]
    out += [f"| {name} | {old} | {new} |" for name, old, new in _side_by_side(f)]
    if f.old_not_measured:
        out += ["", f"OLD not measured: {f.old_not_measured}."]
    for comparison in report.accuracy:
        out += ["", *_accuracy_markdown(comparison)]
    out += [
        "",
        f"_{DIVERGENCE_NOTE}_",
        "",
        f"_{OLD_FIGURES_NOTE}_",
        "",
        *([f"_{ACCURACY_NOTE}_", ""] if report.accuracy else []),
        "## Goldens",
        "",
    ]
    for case in report.cases:
        out.append(f"- `{case.golden}` ({case.kind}): {_case_line(case)}")
    if report.skipped:
        out += ["", "## Goldens that could not be read", ""]
        out += [f"- {line}" for line in report.skipped]
    if report.pending_written:
        out += [
            "",
            f"{len(report.pending_written)} pending golden(s) written: finish the switch with "
            "`smallmodel review`.",
        ]
    return "\n".join(out) + "\n"


def html_page(report: CompareReport) -> str:
    """The report as one HTML page, each golden's tokens shaded by probability."""
    f = report.figures
    rows = []
    for case in report.cases:
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
    title = html.escape(f"smallmodel compare {report.old} -> {report.new}")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;width:100%}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
        ".t{white-space:pre-wrap;font-family:monospace}"
        ".d{outline:2px solid #d00;font-weight:bold}.after{opacity:.7}"
        ".pair{display:flex;gap:2em}.pair table{width:auto}.fail{color:#b00}"
        "</style></head><body>"
        f"<h1>{title}</h1>{_gates_html(report)}<p>{summary}</p>{_figures_html(f)}"
        + "".join(_accuracy_html(comparison) for comparison in report.accuracy)
        + f"<p><small>{html.escape(OLD_FIGURES_NOTE)}</small></p>"
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


# -- OLD beside NEW, accuracy and gates -----------------------------------------------------------


def _value(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _side_by_side(f: Figures) -> list[tuple[str, str, str]]:
    memory = "engine worker" if f.peak_memory == "worker" else "this process, both models"
    return [
        (
            "tokens per second",
            _value(f.old_tokens_per_second, ".1f"),
            _value(f.new_tokens_per_second, ".1f"),
        ),
        (
            "latency per call p50 / p95, ms",
            f"{_value(f.old_latency_p50_ms, '.1f')} / {_value(f.old_latency_p95_ms, '.1f')}",
            f"{_value(f.new_latency_p50_ms, '.1f')} / {_value(f.new_latency_p95_ms, '.1f')}",
        ),
        (
            "verify + load time, s",
            _value(f.old_load_seconds, ".2f"),
            _value(f.new_load_seconds, ".2f"),
        ),
        (
            f"peak memory, MiB ({memory})",
            _value(f.old_peak_rss_mib, ".0f"),
            _value(f.new_peak_rss_mib, ".0f"),
        ),
    ]


def _gate_lines(report: CompareReport) -> list[str]:
    lines = []
    for gate in report.gates:
        where = f" on `{gate.golden}`" if gate.golden else ""
        status = "passed" if gate.passed else "**FAILED**"
        lines.append(f"- `{gate.gate}` {status}{where}: {gate.reason}")
    return [*lines, ""] if lines else []


def _estimate(comparison: AccuracyComparison, side: str) -> str:
    estimate = comparison.old_accuracy if side == "old" else comparison.new_accuracy
    if not estimate.total:
        return "n/a"
    return (
        f"{float(estimate.estimate):.3f} [{float(estimate.lower):.3f}, "
        f"{float(estimate.upper):.3f}] ({estimate.successes}/{estimate.total})"
    )


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(ids) if ids else "none"


def _accuracy_markdown(comparison: AccuracyComparison) -> list[str]:
    out = [
        f"## Accuracy on `{comparison.golden}`",
        "",
        "| | OLD | NEW |",
        "| --- | --- | --- |",
        f"| accuracy [95 % interval] | {_estimate(comparison, 'old')} | "
        f"{_estimate(comparison, 'new')} |",
        "",
        f"NEW wins {len(comparison.wins)} ({_ids(comparison.wins)}), loses "
        f"{len(comparison.losses)} ({_ids(comparison.losses)}); both wrong "
        f"{len(comparison.both_wrong)} ({_ids(comparison.both_wrong)}). Exact McNemar p = "
        f"{comparison.p_value:.4f}.",
    ]
    if comparison.not_replayed:
        out.append(f"Not replayed (no stored model call): {_ids(comparison.not_replayed)}.")
    if comparison.labels:
        old, new = comparison.confusion("old"), comparison.confusion("new")
        columns = _columns(old, new, comparison.labels)
        out += [
            "",
            "Confusion matrices, OLD / NEW (rows: expected, columns: answered):",
            "",
            "| expected | " + " | ".join(columns) + " |",
            "| --- |" + " --- |" * len(columns),
        ]
        for label in old:
            cells = [f"{old[label].get(c, 0)} / {new.get(label, {}).get(c, 0)}" for c in columns]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    flips = [case for case in comparison.cases if case.outcome != "both right"]
    if flips:
        out += ["", "| case | expected | OLD | NEW | |", "| --- | --- | --- | --- | --- |"]
        out += [
            f"| {case.id} | {case.expected} | {_shown(case.old_output)} | "
            f"{_shown(case.new_output, case.error)} | {case.outcome} |"
            for case in flips
        ]
    return out


def _columns(
    old: Mapping[str, Mapping[str, int]],
    new: Mapping[str, Mapping[str, int]],
    labels: Sequence[str],
) -> list[str]:
    found = list(labels)
    for table in (old, new):
        for row in table.values():
            found += [label for label in row if label not in found]
    return found


def _shown(value: Any, error: str | None = None) -> str:
    if error is not None:
        return "error"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


def _accuracy_dict(comparison: AccuracyComparison) -> dict[str, Any]:
    return {
        "golden": comparison.golden,
        "old_accuracy": comparison.old_accuracy.to_dict(),
        "new_accuracy": comparison.new_accuracy.to_dict(),
        "wins": list(comparison.wins),
        "losses": list(comparison.losses),
        "both_wrong": list(comparison.both_wrong),
        "mcnemar_p": comparison.p_value,
        "significantly_worse": comparison.significantly_worse,
        "not_replayed": list(comparison.not_replayed),
        "confusion": (
            {"old": comparison.confusion("old"), "new": comparison.confusion("new")}
            if comparison.labels
            else None
        ),
        "cases": [{**_plain(asdict(case)), "outcome": case.outcome} for case in comparison.cases],
    }


def _case_dict(case: CaseResult) -> dict[str, Any]:
    # asdict copies every field deeply: the verdict (its golden records, steps and top-k) is
    # left out of that copy and written once, as the report has it.
    plain: dict[str, Any] = _plain(
        {**asdict(replace(case, verdict=None)), "verdict": _verdict_dict(case)}
    )
    return plain


def _verdict_dict(case: CaseResult) -> dict[str, Any] | None:
    if case.verdict is None:
        return None
    from pytest_smallmodel.drift import explanation

    return case.verdict.to_dict(explanation.headline(case.verdict))


def _gates_html(report: CompareReport) -> str:
    if not report.gates:
        return ""
    items = "".join(
        f"<li class='{'' if gate.passed else 'fail'}'><code>{html.escape(gate.gate)}</code> "
        f"{'passed' if gate.passed else '<b>FAILED</b>'}"
        f"{' on ' + html.escape(gate.golden) if gate.golden else ''}: {html.escape(gate.reason)}"
        "</li>"
        for gate in report.gates
    )
    return f"<ul>{items}</ul>"


def _figures_html(f: Figures) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{old}</td><td>{new}</td></tr>"
        for name, old, new in _side_by_side(f)
    )
    missing = (
        f"<p>OLD not measured: {html.escape(f.old_not_measured)}.</p>" if f.old_not_measured else ""
    )
    return (
        "<table style='width:auto'><tr><th>speed and memory</th><th>OLD</th><th>NEW</th></tr>"
        f"{rows}</table>{missing}"
    )


def _confusion_html(
    title: str, table: Mapping[str, Mapping[str, int]], columns: Sequence[str]
) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(f"<td{_DIAGONAL if c == label else ''}>{row.get(c, 0)}</td>" for c in columns)
        + "</tr>"
        for label, row in table.items()
    )
    return (
        f"<table><caption>{html.escape(title)}</caption><tr><th>expected \\ answered</th>"
        f"{head}</tr>{body}</table>"
    )


def _pair_row(case: PairedCase) -> str:
    colour = _OUTCOME_COLOURS[case.outcome]
    return (
        f"<tr style='background:{colour}'><td>{html.escape(case.id)}</td>"
        f"<td>{html.escape(case.expected)}</td><td>{html.escape(_shown(case.old_output))}</td>"
        f"<td>{html.escape(_shown(case.new_output, case.error))}</td>"
        f"<td>{html.escape(case.outcome)}</td></tr>"
    )


def _accuracy_html(comparison: AccuracyComparison) -> str:
    matrices = ""
    if comparison.labels:
        old, new = comparison.confusion("old"), comparison.confusion("new")
        columns = _columns(old, new, comparison.labels)
        matrices = (
            "<div class='pair'>"
            + _confusion_html("OLD", old, columns)
            + _confusion_html("NEW", new, columns)
            + "</div>"
        )
    summary = (
        f"OLD accuracy {_estimate(comparison, 'old')}; NEW accuracy "
        f"{_estimate(comparison, 'new')}. NEW wins {len(comparison.wins)}, loses "
        f"{len(comparison.losses)}, both wrong {len(comparison.both_wrong)}; exact McNemar "
        f"p = {comparison.p_value:.4f}."
    )
    legend = " ".join(
        f"<span style='background:{colour};padding:0 .4em'>{html.escape(name)}</span>"
        for name, colour in _OUTCOME_COLOURS.items()
        if name != "both right"
    )
    return (
        f"<h2>Accuracy on <code>{html.escape(comparison.golden)}</code></h2>"
        f"<p>{html.escape(summary)}</p>{matrices}<p>{legend}</p>"
        "<table style='width:auto'><tr><th>case</th><th>expected</th><th>OLD</th><th>NEW</th>"
        "<th></th></tr>" + "".join(_pair_row(case) for case in comparison.cases) + "</table>"
        f"<p><small>{html.escape(ACCURACY_NOTE)}</small></p>"
    )
