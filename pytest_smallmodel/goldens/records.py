"""What a golden holds, independent of the file format: a ``GoldenRecord`` per kind of result.

``record_of`` turns a live result (a ``Generation``, ``Label``, extraction, ``Embedding``) or a
plain value into the record a golden file would store; ``golden_format.py`` reads and writes
records, ``drift.py`` compares them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from pytest_smallmodel.common.results import (
    Embedding,
    ExtractedDict,
    ExtractedList,
    Generation,
    Label,
    Step,
    TokenLogprob,
)

if TYPE_CHECKING:
    from pytest_smallmodel.goldens.evaluation_record import EvaluationRecord

# Logprobs are stored rounded: enough for reports, and it keeps goldens short and stable.
LOGPROB_DECIMALS = 4
SHORT_SHA_LENGTH = 7

GoldenKind = Literal[
    "generation", "extraction", "label", "embedding", "text", "value", "evaluation"
]


@dataclass(frozen=True)
class GoldenRecord:
    """What a golden file holds (or a live result would write), independent of the file format."""

    kind: GoldenKind
    model: str | None = None
    sha256: str | None = None
    request: Mapping[str, Any] | None = None
    text: str | None = None
    tokens: tuple[int, ...] = ()
    finish_reason: str | None = None
    steps: tuple[Step, ...] = ()
    label: str | None = None
    label_logprobs: Mapping[str, float] | None = None
    vector: tuple[float, ...] | None = None
    value: Any = None
    fingerprint: Mapping[str, Any] | None = None
    evaluation: EvaluationRecord | None = None  # kind "evaluation" (goldens/evaluation_record.py)

    @property
    def model_ref(self) -> str:
        return model_ref(self.model, self.sha256)


def model_ref(name: str | None, sha256: str | None) -> str:
    return f"{name or '?'}@{(sha256 or '?')[:SHORT_SHA_LENGTH]}"


def round_logprob(value: float) -> float:
    if not math.isfinite(value):
        return value
    rounded = round(value, LOGPROB_DECIMALS)
    return 0.0 if rounded == 0 else rounded  # no "-0.0" in goldens


def _json_normal(value: Any) -> Any:
    """The value as read back from a JSON file (tuples become lists): comparisons stay fair."""
    return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))


def _rounded_step(step: Step) -> Step:
    return Step(
        step.token,
        step.text,
        round_logprob(step.logprob),
        tuple(TokenLogprob(t.token, t.text, round_logprob(t.logprob)) for t in step.top),
    )


def check_plain(value: Any, where: str = "value") -> None:
    """Raise TypeError naming the offending path unless ``value`` survives a JSON round trip."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"golden cannot store {where} = {value!r}: not a finite number")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"golden cannot store {where}: key {key!r} is not a string (JSON keys are)"
                )
            check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"golden cannot store {where} of type {type(value).__name__}: assert a model result, "
        "or a str, number, bool, None, list or dict of those"
    )


def record_of(value: object) -> GoldenRecord:
    """The golden record a live result (or a plain value) would be stored as."""
    if isinstance(value, ExtractedDict | ExtractedList):
        return _generation_record(value.generation, kind="extraction")
    if isinstance(value, Generation):
        return _generation_record(value, kind="generation")
    if isinstance(value, Label):
        provenance = value.provenance
        labels = provenance.request.labels or tuple(value.logprobs)
        return GoldenRecord(
            kind="label",
            model=provenance.model,
            sha256=provenance.sha256,
            request=_json_normal(provenance.request.as_record()),
            label=value.label,
            label_logprobs={
                name: round_logprob(value.logprobs[name])
                for name in labels
                if name in value.logprobs
            },
            fingerprint=_json_normal(provenance.fingerprint),
        )
    if isinstance(value, Embedding):
        provenance = value.provenance
        return GoldenRecord(
            kind="embedding",
            model=provenance.model,
            sha256=provenance.sha256,
            request=_json_normal(provenance.request.as_record()),
            vector=tuple(float(x) for x in value),
            fingerprint=_json_normal(provenance.fingerprint),
        )
    if callable(to_record := getattr(value, "golden_record", None)):  # an EvaluationReport
        return cast(GoldenRecord, to_record())
    if isinstance(value, str):
        return GoldenRecord(kind="text", text=str.__str__(value))
    check_plain(value)
    return GoldenRecord(kind="value", value=_json_normal(value))


def _generation_record(generation: Generation, *, kind: GoldenKind) -> GoldenRecord:
    provenance = generation.provenance
    return GoldenRecord(
        kind=kind,
        model=provenance.model,
        sha256=provenance.sha256,
        request=_json_normal(provenance.request.as_record()),
        text=generation.text,
        tokens=tuple(generation.tokens),
        finish_reason=generation.finish_reason,
        steps=tuple(_rounded_step(step) for step in generation.steps),
        fingerprint=_json_normal(provenance.fingerprint),
    )


def generation_of(value: object) -> Generation | None:
    """The generation behind a live result, if it has one (extractions keep theirs)."""
    if isinstance(value, ExtractedDict | ExtractedList):
        return value.generation
    if isinstance(value, Generation):
        return value
    return None
