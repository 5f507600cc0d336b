"""golden.py: safe names, the file format, and the syrupy extension inside real pytest runs."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest

from pytest_smallmodel.common.errors import GoldenError
from pytest_smallmodel.common.results import (
    Generation,
    Provenance,
    Request,
    Step,
    Timings,
    TokenLogprob,
)
from pytest_smallmodel.drift.reports import DriftLog
from pytest_smallmodel.drift.rules import DriftPolicy
from pytest_smallmodel.goldens import file_format as golden_format
from pytest_smallmodel.goldens.kinds import FORMATS, record_of
from pytest_smallmodel.plugin.golden import (
    FORMAT_VERSION,
    golden_extension_class,
    parse_golden,
    safe_name_part,
    serialize_record,
    snapshot_stem,
)

SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sample_generation() -> Generation:
    steps = [
        Step(1, "Hello", -0.012345678, (TokenLogprob(1, "Hello", -0.012345678),)),
        Step(2, "\n", -0.5, (TokenLogprob(2, "\n", -0.5), TokenLogprob(3, " x", -0.9))),
        Step(4, "wörld", -1e-9, (TokenLogprob(4, "wörld", -1e-9),)),
    ]
    request = Request(
        kind="chat",
        prompt="<|user|>hi\n<|assistant|>",
        prompt_tokens=(5, 6, 7),
        settings={"n_ctx": 2048, "flash_attn": False},
        max_tokens=3,
        messages=({"role": "user", "content": "hi"},),
    )
    return Generation(
        "Hello\nwörld",
        tokens=[1, 2, 4],
        steps=steps,
        finish_reason="length",
        timings=Timings(1.0, 2.0, 3),
        provenance=Provenance("smollm2", SHA, request, {"llama_cpp_python": "0.3.36"}),
    )


# -- names ---------------------------------------------------------------------------------------


def test_plain_names_are_kept_readable() -> None:
    assert snapshot_stem("test_route[refund]", 1) == "test_route[refund].1"
    assert snapshot_stem("TestA.test_b[x-1]", 0) == "TestA.test_b[x-1]"
    assert snapshot_stem("test_a", "summary") == "test_a[summary]"


@pytest.mark.parametrize(
    "test_name",
    ["test_x[a/b]", "test_x[../../etc/passwd]", "test_x[..]", "test_x[c:\\d]", "test_x[\x00\n]"],
)
def test_unsafe_ids_become_one_safe_component(test_name: str) -> None:
    stem = snapshot_stem(test_name, 0)
    assert "/" not in stem and "\\" not in stem and "\x00" not in stem and "\n" not in stem
    assert Path("golden", f"{stem}.json").resolve().parent == Path("golden").resolve()
    assert stem.startswith("test_x[")
    assert stem == test_name or "~" in stem  # altered names carry a hash of the original


def test_ids_that_sanitize_alike_stay_distinct() -> None:
    assert snapshot_stem("test_x[a/b]", 0) != snapshot_stem("test_x[a_b]", 0)


def test_unicode_is_kept_and_long_ids_truncate_without_colliding() -> None:
    assert safe_name_part("test_x[café]", 160) == "test_x[café]"
    long_a = "test_x[" + "é" * 300 + "a]"
    long_b = "test_x[" + "é" * 300 + "b]"
    stem_a, stem_b = snapshot_stem(long_a, 1), snapshot_stem(long_b, 1)
    assert stem_a != stem_b
    assert len(f"{stem_a}.json".encode()) <= 200
    assert stem_a.endswith(".1")


# -- format --------------------------------------------------------------------------------------


def test_generation_file_reads_as_text_lines_then_record() -> None:
    text = serialize_record(record_of(sample_generation()))
    data = json.loads(text)
    lines = text.splitlines()
    assert lines[:5] == ["{", '  "text": [', '    "Hello",', '    "wörld"', "  ],"]
    assert list(data)[:6] == ["text", "golden_format", "kind", "model", "sha256", "request"]
    assert data["golden_format"] == FORMAT_VERSION and data["kind"] == "generation"
    assert '    "prompt_tokens": [5, 6, 7],' in lines
    assert '  "tokens": [1, 2, 4],' in lines
    assert data["request"]["prompt"] == ["<|user|>hi", "<|assistant|>"]
    step_lines = [line for line in lines if line.lstrip().startswith('{"token": ')]
    assert len(step_lines) == 3
    assert step_lines[0].strip() == (
        '{"token": 1, "text": "Hello", "logprob": -0.0123, "top": [[1, "Hello", -0.0123]]},'
    )
    assert '"logprob": 0.0' in step_lines[2]  # rounded, and never "-0.0"
    # Same result, same bytes: the order settings were merged in does not reach the file.
    generation = sample_generation()
    request = generation.provenance.request
    reordered = dataclasses.replace(
        generation.provenance,
        request=dataclasses.replace(request, settings=dict(reversed(request.settings.items()))),
    )
    assert list(reordered.request.settings) != list(request.settings)
    again = Generation(
        generation.text,
        tokens=generation.tokens,
        steps=generation.steps,
        finish_reason=generation.finish_reason,
        timings=generation.timings,
        provenance=reordered,
    )
    assert serialize_record(record_of(again)) == text


def test_round_trip_keeps_everything_compared() -> None:
    record = record_of(sample_generation())
    parsed = parse_golden(serialize_record(record), path="g.json")
    assert parsed == record


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, 2.5, None, True], "c": {"d": "x\ny"}},
        [],
        "multi\nline\n",
        "",
        3,
        None,
    ],
)
def test_plain_values_round_trip(value: object) -> None:
    text = serialize_record(record_of(value))
    assert json.loads(text)["golden_format"] == FORMAT_VERSION
    parsed = parse_golden(text, path="g.json")
    assert parsed == record_of(value)


def _golden_text(**changes: object) -> str:
    data = json.loads(serialize_record(record_of(sample_generation())))
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "the top level must be a JSON object"),
        (_golden_text(golden_format=0), "format version 0 is not supported"),
        (_golden_text(golden_format=None), "missing or invalid 'golden_format'"),
        (_golden_text(kind="poem"), "unknown kind 'poem'"),
        (_golden_text(tokens=None), "missing field 'tokens'"),
        (_golden_text(tokens=[1, 2, 5]), "'tokens' and the tokens of 'steps' disagree"),
        (_golden_text(text="Hello"), "field 'text' has the wrong type"),
        (_golden_text(finish_reason="maybe"), "finish_reason 'maybe'"),
        (_golden_text(steps=[1, 2, 3]), "field 'steps[0]' has the wrong type (int)"),
        ("\udcff{}", "not UTF-8"),
    ],
)
def test_invalid_goldens_raise_golden_error_naming_file(text: str, problem: str) -> None:
    with pytest.raises(GoldenError) as caught:
        parse_golden(text, path="golden/tests/test_a/test_b.json")
    message = str(caught.value)
    assert message.startswith("golden golden/tests/test_a/test_b.json is invalid: ")
    assert problem in message and "--snapshot-update" in message


def test_every_record_kind_has_a_file_format() -> None:
    assert list(FORMATS) == golden_format.golden_schema()["properties"]["kind"]["enum"]


def test_extension_class_is_shared_per_configuration(tmp_path: Path) -> None:
    log = DriftLog()
    first = golden_extension_class(
        golden_dir=tmp_path / "golden", rootdir=tmp_path, policy=DriftPolicy(), log=log
    )
    again = golden_extension_class(
        golden_dir=tmp_path / "golden", rootdir=tmp_path, policy=DriftPolicy(), log=log
    )
    other = golden_extension_class(
        golden_dir=tmp_path / "golden", rootdir=tmp_path, policy=DriftPolicy(strict=True), log=log
    )
    assert first is again and other is not first
    # the pytest-xdist controller finds it by module and name, as syrupy records it
    module = importlib.import_module(first.__module__)
    assert getattr(module, first.__qualname__).golden_dir == tmp_path / "golden"


# -- inside pytest -------------------------------------------------------------------------------

CONFTEST = '''
import os
import pytest
from pytest_smallmodel.drift.rules import DriftPolicy
from pytest_smallmodel.drift.reports import DriftLog
from pytest_smallmodel.plugin.golden import golden_assertion, golden_extension_class
from pytest_smallmodel.common.results import (
    Generation, Provenance, Request, ScoredStep, Step, Timings, TokenLogprob,
)

LOG = DriftLog()


def pytest_configure(config):
    config.golden_ext = golden_extension_class(
        golden_dir=config.rootpath / "golden",
        rootdir=config.rootpath,
        policy=DriftPolicy(strict=config.getoption("strict_goldens")),
        log=LOG,
    )


def pytest_addoption(parser):
    parser.addoption("--strict-goldens", action="store_true", dest="strict_goldens")


@pytest.fixture
def golden(snapshot, request):
    return golden_assertion(snapshot, request.config.golden_ext)


def pytest_terminal_summary(terminalreporter):
    for line in LOG.summary_lines():
        terminalreporter.write_line(line)


def fake_generation(tokens, runtime, gap):
    """Tokens from a fake model; the scorer puts the golden token `gap` below the best."""
    def scorer(request, golden_tokens):
        out = []
        for i, t in enumerate(golden_tokens):
            g = TokenLogprob(t, f"<{t}>", -0.1 - (gap if i > 0 else 0.0))
            b = TokenLogprob(tokens[min(i, len(tokens) - 1)], "best", -0.1)
            out.append(ScoredStep(i, g, b if i > 0 else g, (b, g)))
        return out
    steps = [Step(t, f"<{t}>", -0.1, (TokenLogprob(t, f"<{t}>", -0.1),)) for t in tokens]
    request = Request(kind="generate", prompt="p", prompt_tokens=(1,), settings={"n_ctx": 64})
    return Generation(
        "".join(s.text for s in steps), tokens=tokens, steps=steps, finish_reason="length",
        timings=Timings(1, 1, len(tokens)),
        provenance=Provenance("smollm2", "b179c95" + "0" * 57, request,
                              {"llama_cpp_python": runtime}, scorer),
    )
'''

TESTS = """
import os
import pytest
from conftest import fake_generation

@pytest.mark.parametrize("case", ["plain", "a/b", "../..", "café", "x" * 300], ids=str)
def test_values(case, golden):
    assert {"case": case, "n": [1, 2]} == golden
    assert "line one\\nline two" == golden

def test_generation(golden):
    tokens = [1, 2, 3] if os.environ.get("DRIFT") is None else [1, 5, 6]
    runtime = os.environ.get("RUNTIME", "0.3.16")
    gap = float(os.environ.get("GAP", "0"))
    assert fake_generation(tokens, runtime, gap) == golden
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_support=TESTS)
    return pytester


def goldens(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "golden").rglob("*.json"))


def test_missing_goldens_fail_then_update_writes_them(project: pytest.Pytester) -> None:
    result = project.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(["*no golden at golden/test_support/test_values*plain*.json*"])
    result.stdout.fnmatch_lines(["*run `pytest --snapshot-update` to record it*"])
    project.runpytest("-q", "--snapshot-update").assert_outcomes(passed=6)
    files = goldens(project.path)
    assert "golden/test_support/test_generation.json" in files
    assert "golden/test_support/test_values[plain].json" in files
    assert "golden/test_support/test_values[plain].1.json" in files
    assert len(files) == 11 and all(f.startswith("golden/test_support/") for f in files)
    project.runpytest("-q").assert_outcomes(passed=6)


def test_drift_failure_prints_the_whole_report(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.runpytest("-q", "--snapshot-update", "-k", "generation").assert_outcomes(passed=1)
    monkeypatch.setenv("DRIFT", "1")
    monkeypatch.setenv("RUNTIME", "0.3.36")
    monkeypatch.setenv("GAP", "0.2")
    passed = project.runpytest("-q", "-k", "generation")
    passed.assert_outcomes(passed=1)
    passed.stdout.fnmatch_lines(["goldens: 1 passed within tolerance", "PASS (tolerance)*"])
    passed.stdout.fnmatch_lines(["*changed llama_cpp_python: 0.3.16 -> 0.3.36"])
    strict = project.runpytest("-q", "-k", "generation", "--strict-goldens")
    strict.assert_outcomes(failed=1)
    monkeypatch.setenv("GAP", "2.5")
    failed = project.runpytest("-q", "-k", "generation")
    failed.assert_outcomes(failed=1)
    # Without -vv pytest truncates assertion explanations to 8 lines: every part must show.
    failed.stdout.fnmatch_lines(
        [
            "*GoldenMismatch: drift beyond tolerance: at step 1*2.5000 nats below*",
            "*golden: golden/test_support/test_generation.json",
            "*first divergent step: 1*",
            "*top-5 at step 1, this run*",
            "*--- golden",
            "*fingerprint fields that changed*",
            "*llama_cpp_python: 0.3.16 -> 0.3.36",
        ]
    )
    assert "truncated" not in failed.stdout.str()


def test_corrupt_golden_fails_naming_it_and_update_replaces_it(project: pytest.Pytester) -> None:
    project.runpytest("-q", "--snapshot-update").assert_outcomes(passed=6)
    target = project.path / "golden/test_support/test_generation.json"
    target.write_text('{"golden_format": 1, "kind": "generation"', encoding="utf-8")
    result = project.runpytest("-q", "-k", "generation")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*golden golden/test_support/test_generation.json cannot be used: not valid JSON*"]
    )
    project.runpytest("-q", "--snapshot-update", "-k", "generation").assert_outcomes(passed=1)
    assert json.loads(target.read_text(encoding="utf-8"))["tokens"] == [1, 2, 3]
    project.runpytest("-q").assert_outcomes(passed=6)


def test_xdist_writes_every_golden(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = project.runpytest_subprocess("-q", "-n", "2", "--snapshot-update")
    result.assert_outcomes(passed=6)
    files = goldens(project.path)
    assert len(files) == 11
    for name in files:
        parse_golden((project.path / name).read_text(encoding="utf-8"), path=name)
    # Unused and orphaned goldens are the plugin's business: test_golden_safety.py.


def test_every_golden_in_the_repository_matches_the_shipped_schema() -> None:
    import jsonschema

    from pytest_smallmodel.goldens.file_format import golden_schema

    validator = jsonschema.Draft202012Validator(golden_schema())
    goldens = sorted((Path(__file__).parents[2] / "golden").rglob("*.json"))
    assert len(goldens) >= 11
    for path in goldens:
        validator.validate(json.loads(path.read_text(encoding="utf-8")))
