"""The kinds of golden behind one interface each: registries, golden.schema.json, round trips."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.results import (
    Embedding,
    ExtractedDict,
    Generation,
    Label,
    Provenance,
    Request,
    Step,
    Timings,
    TokenLogprob,
)
from pytest_smallmodel.drift import explanation
from pytest_smallmodel.drift.kinds import KINDS, replay_request
from pytest_smallmodel.drift.rules import DriftPolicy, compare
from pytest_smallmodel.evaluation.cases import cases_from
from pytest_smallmodel.evaluation.report import EvaluationReport
from pytest_smallmodel.evaluation.run import run_cases
from pytest_smallmodel.goldens.file_format import golden_schema, parse_golden, serialize_record
from pytest_smallmodel.goldens.kinds import FORMATS, record_of

SHA = "c0ffee" * 10 + "abcd"
SETTINGS = {"n_ctx": 512}


def _provenance(kind: str, **request: object) -> Provenance:
    fields: dict[str, object] = {"prompt": "Q: hi\nA:", "prompt_tokens": (3, 4), **request}
    return Provenance(
        "tiny",
        SHA,
        Request(kind=kind, settings=SETTINGS, **fields),
        {"engine": "llama-cpp-python"},  # type: ignore[arg-type]
    )


def _generation(text: str, kind: str = "generate", **request: object) -> Generation:
    pieces = [text[: len(text) // 2], text[len(text) // 2 :]]
    steps = [
        Step(10 + i, piece, -0.25 * (i + 1), (TokenLogprob(10 + i, piece, -0.25 * (i + 1)),))
        for i, piece in enumerate(pieces)
    ]
    return Generation(
        text,
        tokens=[s.token for s in steps],
        steps=steps,
        finish_reason="length",
        timings=Timings(1.0, 1.0, len(steps)),
        provenance=_provenance(kind, max_tokens=2, **request),
    )


def _extraction() -> ExtractedDict:
    extracted = ExtractedDict({"total": 12})
    extracted.generation = _generation('{"total": 12}', "extract", schema={"type": "object"})
    return extracted


def _label(choice: str = "yes") -> Label:
    scores = {"yes": -0.1, "no": -2.5} if choice == "yes" else {"yes": -2.5, "no": -0.1}
    return Label(choice, logprobs=scores, provenance=_provenance("classify", labels=("yes", "no")))


def _embedding() -> Embedding:
    vector = Embedding([0.25, -0.5, 1.0])
    vector.provenance = _provenance("embed", prompt_tokens=())
    return vector


def _evaluation(first: str = "yes") -> EvaluationReport:
    """Two cases, each holding its classify call: one correct, one wrong."""
    calls = {"a": _label(first), "b": _label()}
    rows = [{"id": "a", "input": "Q: hi", "expected": "yes"}]
    rows.append({"id": "b", "input": "Q: hi", "expected": "no"})
    made: list[object] = []

    def task(case: object) -> object:
        made.append(calls[case.id])  # type: ignore[attr-defined]
        return made[-1]

    return run_cases(
        cases_from(rows),
        task,
        cached_calls=lambda: 0,
        labels=["yes", "no"],
        last_call=lambda: made[-1],
    )


# One live value of each kind, as a test would assert it.
SAMPLES: dict[str, Callable[[], object]] = {
    "generation": lambda: _generation("Hello there"),
    "extraction": _extraction,
    "label": _label,
    "embedding": _embedding,
    "evaluation": _evaluation,
    "text": lambda: "two\nlines",
    "value": lambda: {"n": [1, 2.5, None], "ok": True},
}


def test_every_kind_is_registered_once_in_both_halves_and_in_the_schema() -> None:
    schema = golden_schema()
    assert list(FORMATS) == list(KINDS) == schema["properties"]["kind"]["enum"] == list(SAMPLES)
    for name in FORMATS:
        assert FORMATS[name].kind == KINDS[name].kind == name
    named = [json.dumps(part["if"]) for part in schema["allOf"]]
    model_results = [name for name, kind in FORMATS.items() if kind.model_result]
    assert {
        "if": {"properties": {"kind": {"enum": model_results}}},
        "then": {"$ref": "#/$defs/model_result"},
    } in schema["allOf"]
    for name in FORMATS:  # each kind has its part of the schema
        assert any(f'"{name}"' in text for text in named), f"golden.schema.json lacks {name!r}"


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_kind_holds_its_values_and_round_trips_a_document(name: str) -> None:
    record = record_of(SAMPLES[name]())
    assert record.kind == name
    text = serialize_record(record)
    assert json.loads(text)["kind"] == name
    parsed = parse_golden(text, path=f"golden/{name}.json")
    assert parsed == record
    assert serialize_record(parsed) == text


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_kind_compares_its_own_golden_as_identical(name: str) -> None:
    live = SAMPLES[name]()
    golden = parse_golden(serialize_record(record_of(live)), path="golden/g.json")
    verdict = compare(golden, live, policy=DriftPolicy(), golden_path="golden/g.json")
    assert verdict.passed and verdict.reason.value == "identical"


@pytest.mark.parametrize("name", ["text", "value"])
def test_plain_values_cannot_be_replayed(name: str) -> None:
    record = record_of(SAMPLES[name]())
    with pytest.raises(EngineError, match="cannot be replayed"):
        replay_request(None, record)  # type: ignore[arg-type]


def test_an_evaluation_fails_naming_the_case_whose_verdict_flipped() -> None:
    golden = parse_golden(serialize_record(record_of(_evaluation())), path="golden/e.json")
    verdict = compare(golden, _evaluation("no"), policy=DriftPolicy(), golden_path="golden/e.json")
    assert not verdict.passed
    report = explanation.text(verdict)
    assert report.startswith("1 of 2 cases changed output or verdict (exact mode); accuracy ")
    assert "  a: 'yes' -> 'no' (correct -> wrong): label changed from 'yes' to 'no'" in report
    assert "(1/2 -> 0/2)" in report
