"""A ``classify`` result: the chosen label and every label's total logprob.

The label a reviewer reads must be the best scored one (``consistency_problem``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_smallmodel.common.results import Label
from pytest_smallmodel.goldens.document import GoldenFiles, Inline, number
from pytest_smallmodel.goldens.records import (
    LOGPROB_DECIMALS,
    GoldenRecord,
    provenance_fields,
    round_logprob,
)

# Label logprobs are stored rounded: two stored values may differ by up to one unit of the
# last decimal from the order of the unrounded ones that chose the label.
_ROUNDING_SLACK = 2 * 10.0**-LOGPROB_DECIMALS


class LabelFormat:
    kind = "label"
    model_result = True
    stores = (Label,)

    def record(self, value: Label) -> GoldenRecord:
        labels = value.provenance.request.labels or tuple(value.logprobs)
        return GoldenRecord(
            kind=self.kind,
            label=value.label,
            label_logprobs={
                name: round_logprob(value.logprobs[name])
                for name in labels
                if name in value.logprobs
            },
            **provenance_fields(value.provenance),
        )

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        return {"label": record.label}

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        return {"logprobs": Inline(dict(record.label_logprobs or {}))}

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        return GoldenRecord(
            kind=self.kind,
            label=data["label"],
            label_logprobs={str(k): number(v) for k, v in data["logprobs"].items()},
            **common,
        )

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        scores = dict(record.label_logprobs or {})
        labels = list((record.request or {}).get("labels") or scores)
        unknown = [name for name in scores if name not in labels]
        if unknown:
            return f"'logprobs' scores {unknown[0]!r}, which is not one of 'request.labels'"
        if record.label not in scores:
            choices = ", ".join(map(repr, scores)) or "(none)"
            return f"field 'label' is {record.label!r}, not one of the scored labels {choices}"
        best = max(scores, key=lambda name: scores[name])
        if scores[record.label] < scores[best] - _ROUNDING_SLACK:
            return (
                f"field 'label' is {record.label!r} (logprob {scores[record.label]}) but "
                f"{best!r} scores best ({scores[best]}): the label is the best scored one"
            )
        return None


FORMAT = LabelFormat()
