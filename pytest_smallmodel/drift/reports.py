"""The session's golden comparisons worth reporting, and their presentations.

``DriftLog`` collects verdicts (merged from pytest-xdist workers); it renders them as the
terminal summary, as Markdown for a pull-request comment (``--smallmodel-report``) and as JSON
for machines (``--smallmodel-report-json``, ``report.schema.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.drift import explanation
from pytest_smallmodel.drift.text import agreement_summary
from pytest_smallmodel.drift.verdict import FieldChange, Outcome, Verdict

# The JSON report's format version (report.schema.json): bump on incompatible changes.
REPORT_FORMAT_VERSION = 1


# Outcomes the summary and Markdown report show; plain identical matches only reach the JSON.
_REPORTED = {
    Outcome.IDENTICAL_NEW_FINGERPRINT,
    Outcome.TOLERATED,
    Outcome.REWRITTEN,
    Outcome.MODEL_CHANGED,
    Outcome.REQUEST_CHANGED,
    Outcome.DRIFT,
    Outcome.MISMATCH,
    Outcome.CORRUPT,
    Outcome.MISSING,
    Outcome.WRITE_FAILED,
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
    # The verdict as data (Verdict.to_dict); None for a golden that could not be written.
    verdict: Mapping[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        data["verdict"] = dict(self.verdict) if self.verdict is not None else None
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
            verdict=data.get("verdict"),
        )

    def report(self) -> dict[str, Any]:
        """This entry in the JSON report: the test, then the verdict's data."""
        verdict = (
            dict(self.verdict)
            if self.verdict is not None
            else {
                "outcome": self.outcome.value,
                "passed": self.passed,
                "reason": self.outcome.value,
                "golden": self.golden_path,
                "headline": self.headline,
            }
        )
        # A rewrite under --snapshot-update is the session's outcome; the comparison's stays.
        return {"test": self.test, "session_outcome": self.outcome.value, **verdict}


class DriftLog:
    """Golden comparisons worth reporting in this session (not plain identical matches).

    Under pytest-xdist each worker has its own log: ship ``to_json()`` through ``workeroutput``
    and ``merge_json()`` it on the controller.
    """

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def add(self, verdict: Verdict, *, test: str | None = None, rewriting: bool = False) -> None:
        outcome = Outcome.REWRITTEN if rewriting and not verdict.passed else verdict.outcome
        headline = explanation.headline(verdict)
        self.entries.append(
            LogEntry(
                test=test or verdict.golden_path,
                golden_path=verdict.golden_path,
                outcome=outcome,
                passed=verdict.passed or rewriting,
                headline=headline,
                lines=explanation.lines(verdict),
                changed=verdict.changed,
                verdict=verdict.to_dict(headline),
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
        """The entries the summary and Markdown show, in a stable order."""
        reported = (e for e in self.entries if e.outcome in _REPORTED)
        return sorted(reported, key=lambda e: (e.test, e.golden_path))

    def _by_outcome(self, *outcomes: Outcome) -> list[LogEntry]:
        return [e for e in self._sorted() if e.outcome in outcomes]

    @property
    def failures(self) -> list[LogEntry]:
        return [e for e in self._sorted() if not e.passed]

    def summary_lines(self) -> list[str]:
        """Lines for the terminal summary; empty when there is nothing beyond identical matches."""
        if not self._sorted():
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
                    *_agreement_markdown(entry),
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

    def json_report(self) -> dict[str, Any]:
        """Every reported verdict of the session as data (report.schema.json)."""
        entries = sorted(self.entries, key=lambda e: (e.test, e.golden_path))
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.outcome.value] = counts.get(entry.outcome.value, 0) + 1
        return {
            "format": REPORT_FORMAT_VERSION,
            "counts": dict(sorted(counts.items())),
            "verdicts": [entry.report() for entry in entries],
        }

    def write_json(self, path: Path) -> None:
        text = json.dumps(self.json_report(), indent=2, ensure_ascii=False, allow_nan=False)
        atomic_write_text(Path(path), text + "\n")


def _agreement_markdown(entry: LogEntry) -> list[str]:
    """The KL and top-token agreement of a generation, in the open (not only in details)."""
    data = (entry.verdict or {}).get("topk_agreement")
    if not data:
        return []
    return [f"Top-k: {_md_escape(agreement_summary(data))}", ""]


def _md_escape(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _fence(lines: Sequence[str]) -> str:
    body = "\n".join(lines)
    ticks = "```"
    while ticks in body:
        ticks += "`"
    return f"{ticks}text\n{body}\n{ticks}"
