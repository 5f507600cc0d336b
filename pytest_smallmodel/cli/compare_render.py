"""How a ``compare_report.CompareReport`` reads: Markdown, one HTML page, JSON data.

``compare.py`` replays and measures; this module only renders what it found.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pytest_smallmodel.cli.compare_report import CaseResult, CompareReport

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


def to_dict(report: CompareReport) -> dict[str, Any]:
    """The report as JSON data (``smallmodel compare --json``)."""
    return {
        "old": report.old,
        "new": report.new,
        "new_sha256": report.new_sha256,
        "figures": {**asdict(report.figures), "identical_share": report.figures.identical_share},
        "notes": [DIVERGENCE_NOTE, OLD_FIGURES_NOTE],
        "cases": [_plain(asdict(case)) for case in report.cases],
        "skipped_goldens": report.skipped,
        "pending_written": report.pending_written,
    }


def markdown(report: CompareReport) -> str:
    """The report as Markdown (what ``smallmodel compare`` prints)."""
    f = report.figures
    out = [
        f"# smallmodel compare {report.old} -> {report.new}",
        "",
        f"NEW is `{report.new}@{report.new_sha256[:8]}`. {f.cases} golden(s) replayed.",
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
