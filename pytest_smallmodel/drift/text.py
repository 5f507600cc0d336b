"""Text pieces every kind's failure text is made of: diffs, JSON-like lines, numbers.

Shared by ``explanation`` (the report around the evidence) and each kind in ``drift/kinds/``
(its evidence), and by ``smallmodel compare``; only rendering, no decisions.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_smallmodel.common.results import TokenLogprob
    from pytest_smallmodel.goldens.records import GoldenRecord


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


def nats(value: float) -> str:
    return f"{value:.2f}"


def lp(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def token(token: TokenLogprob) -> str:
    return f"{token.text!r} (id {token.token})"


def top_line(top: Sequence[TokenLogprob]) -> str:
    return " | ".join(f"{t.text!r} {t.logprob:.4f}" for t in top[:5]) or "n/a"


OUTPUT_DIFF = "output diff (golden -> this run):"


def agreement_summary(data: Mapping[str, Any]) -> str:
    """One line from ``TopKAgreement.to_dict`` (the JSON form, so that the Markdown report,
    which keeps verdicts as data, words it the same way)."""
    steps = int(data["steps_compared"])
    agreeing = int(data["top_agreeing_steps"])
    line = (
        f"top-k agreement with the golden at the same contexts ({steps} step(s)): KL over the "
        f"shared top-k support mean {_kl(data['mean_kl'])}, max {_kl(data['max_kl'])}"
        + (f" at step {data['max_kl_step']}" if data.get("max_kl_step") is not None else "")
        + f"; top token agrees on {agreeing} of {steps} ({agreeing / max(steps, 1):.1%})"
    )
    at = data.get("at_divergence")
    if at is not None:
        line += (
            f"; at the first divergent step {at['step']}: KL {_kl(at['kl'])} over "
            f"{at['shared']} shared token(s), top token "
            + ("agrees" if at["top_agrees"] else "differs")
        )
    return line


def _kl(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
