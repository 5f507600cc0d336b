"""What a golden holds, independent of the file format: one ``GoldenRecord`` for every kind.

Each kind's module in ``goldens/kinds/`` fills the fields its kind uses (``goldens.kinds.record_of``
turns a live result or a plain value into the record a golden file would store);
``file_format`` reads and writes records, ``drift/`` compares them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # a record holds steps; the kinds (goldens/kinds/) build them
    from pytest_smallmodel.common.results import Provenance, Step

# Logprobs are stored rounded: enough for reports, and it keeps goldens short and stable.
LOGPROB_DECIMALS = 4
SHORT_SHA_LENGTH = 7
# Golden files and pending results alike.
GOLDEN_SUFFIX = ".json"
# What ran a model, for goldens written before their fingerprint said (common/fingerprint.py).
DEFAULT_ENGINE = "llama-cpp-python"

# A key of ``goldens.kinds.FORMATS`` (and of ``drift.kinds.KINDS``): the registries say which.
GoldenKind = str
CaseVerdict = Literal["correct", "wrong", "error"]
CASE_VERDICTS: tuple[CaseVerdict, ...] = ("correct", "wrong", "error")


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
    evaluation: EvaluationRecord | None = None  # kind "evaluation" (goldens/kinds/evaluation.py)

    @property
    def model_ref(self) -> str:
        return model_ref(self.model, self.sha256)

    @property
    def prompt_source(self) -> Any:
        """What a stored chat or prompt request is sent again from: its messages, else its
        prompt."""
        request = self.request or {}
        messages = request.get("messages")
        return messages if messages is not None else request.get("prompt", "")

    @property
    def engine(self) -> Any:
        """What ran the model (``llama-cpp-python``, ``llama-server``, ``openai``)."""
        return (self.fingerprint or {}).get("engine", DEFAULT_ENGINE)


@dataclass(frozen=True)
class CaseRecord:
    """One case of an evaluation golden."""

    id: str
    row: Mapping[str, Any]  # the case as a dataset row: "input", and "expected" or "checks"
    output: Any  # what the task returned, as JSON (None when it raised)
    verdict: CaseVerdict
    detail: str  # why it is wrong, or the exception it raised ("" when correct)
    result: GoldenRecord | None  # the last model call the task made (None: none finished)
    # That call's live result, this run only: drift teacher-forces its stored tokens on it.
    live: object = field(default=None, compare=False, repr=False)

    @property
    def expected(self) -> Any:
        return self.row.get("expected", {"checks": self.row.get("checks")})


@dataclass(frozen=True)
class EvaluationRecord:
    """What an evaluation golden holds besides the model: its cases and metrics."""

    cases: tuple[CaseRecord, ...]
    # accuracy, per label and per field: counts with estimate and interval (EvaluationReport's
    # to_dict without latency and cases)
    metrics: Mapping[str, Any]

    def by_id(self) -> dict[str, CaseRecord]:
        return {case.id: case for case in self.cases}


def model_ref(name: str | None, sha256: str | None) -> str:
    return f"{name or '?'}@{(sha256 or '?')[:SHORT_SHA_LENGTH]}"


def round_logprob(value: float) -> float:
    if not math.isfinite(value):
        return value
    rounded = round(value, LOGPROB_DECIMALS)
    return 0.0 if rounded == 0 else rounded  # no "-0.0" in goldens


def json_normal(value: Any) -> Any:
    """The value as read back from a JSON file (tuples become lists): comparisons stay fair."""
    return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))


def provenance_fields(provenance: Provenance) -> dict[str, Any]:
    """The fields every model result's record has: which model, asked what, under what."""
    return {
        "model": provenance.model,
        "sha256": provenance.sha256,
        "request": json_normal(provenance.request.as_record()),
        "fingerprint": json_normal(provenance.fingerprint),
    }


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
