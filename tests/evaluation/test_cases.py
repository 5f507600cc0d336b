"""Reading labelled datasets: every problem is one error naming the file, the line, the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_smallmodel import Case, cases_from, load_cases
from pytest_smallmodel.common.errors import ConfigError
from pytest_smallmodel.evaluation.cases import ExpectedFields, ExpectedLabel, TextChecks


def _jsonl(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text(
        "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n",
        encoding="utf-8",
    )
    return path


def test_the_three_kinds_of_expected_value_and_chat_input(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        {"id": 1, "input": "I was charged twice", "expected": "billing"},
        {"id": "inv", "input": "Invoice 7: 10 EUR", "expected": {"amount": 10}},
        {
            "id": "cap",
            "input": [{"role": "user", "content": "Capital of France?"}],
            "checks": {"contains": "Paris", "max_chars": 80, "regex": "^[A-Z]"},
        },
    )
    label, fields, checks = load_cases(path)
    assert label == Case("1", "I was charged twice", ExpectedLabel("billing"))
    assert fields.expected == ExpectedFields({"amount": 10})
    assert isinstance(checks.expected, TextChecks) and checks.expected.contains == ("Paris",)
    assert checks.input == ({"role": "user", "content": "Capital of France?"},)
    assert label.where == f"{path}:1"


def test_csv_with_labels_fields_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "cases.csv"
    path.write_text(
        "id,input,expected\n"
        "a,My card was billed twice,billing\n"
        'b,Invoice 7: 10 EUR,"{""amount"": 10}"\n'
        'c,"[{""role"": ""user"", ""content"": ""hi""}]",other\n',
        encoding="utf-8",
    )
    a, b, c = load_cases(path)
    assert a.expected == ExpectedLabel("billing") and b.expected == ExpectedFields({"amount": 10})
    assert c.input == ({"role": "user", "content": "hi"},)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [
                {"id": "a", "input": "x", "expected": "l"},
                {"id": "a", "input": "y", "expected": "l"},
            ],
            r"cases.jsonl:2: field 'id': 'a' is already the id of the case at .*cases.jsonl:1",
        ),
        ([{"id": "a", "expected": "l"}], r"cases.jsonl:1: field 'input' is missing"),
        ([{"id": "a", "input": "x"}], r"cases.jsonl:1: field 'expected' is missing"),
        ([{"input": "x", "expected": "l"}], r"cases.jsonl:1: field 'id' is missing"),
        (
            [{"id": "a", "input": "x", "checks": {"regex": "(unclosed"}}],
            r"cases.jsonl:1: field 'checks.regex' = '\(unclosed': expected a valid regular",
        ),
        (
            [{"id": "a", "input": "x", "checks": {"startswith": "P"}}],
            r"cases.jsonl:1: field 'checks' has unknown check\(s\) 'startswith'",
        ),
        (
            [{"id": "a", "input": "x", "checks": {"max_chars": 0}}],
            r"field 'checks.max_chars' = 0: expected a positive integer",
        ),
        (
            [{"id": "a", "input": "x", "checks": {"embedding": [0.1, 0.2]}}],
            r"'embedding' \(the reference vector\) and 'min_cosine' go together",
        ),
        (
            [{"id": "a", "input": "x", "expected": 3}],
            r"field 'expected' is a label \(string\) or an object of fields, not int",
        ),
        (
            [{"id": "a", "input": [{"role": "user"}], "expected": "l"}],
            r"field 'input', message 0: a chat message is",
        ),
        (
            [{"id": "a", "input": "x", "expected": "l", "label": "l"}],
            r"cases.jsonl:1: unknown field\(s\) 'label'",
        ),
        (
            ['{"id": "a", "input": "x", "expected": "l"}', '{"id": "b", "input":'],
            r"cases.jsonl:2: not a JSON object",
        ),
        ([], r"cases.jsonl: the dataset has no cases"),
    ],
)
def test_bad_datasets_are_one_error_naming_file_line_and_field(
    tmp_path: Path, rows: list[object], message: str
) -> None:
    path = _jsonl(tmp_path, *rows) if rows else tmp_path / "cases.jsonl"
    if not rows:
        path.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_cases(path)


def test_a_python_list_and_its_errors() -> None:
    cases = cases_from([{"id": "a", "input": "x", "expected": "l"}])
    assert cases[0].where == "cases[0]"
    with pytest.raises(ConfigError, match=r"cases\[1\]: field 'id': 'a' is already"):
        cases_from([{"id": "a", "input": "x", "expected": "l"}] * 2)
    with pytest.raises(ConfigError, match=r"a dataset is a \.jsonl or \.csv file"):
        load_cases("cases.txt")
