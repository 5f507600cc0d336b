from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_run import run
from gguf_factory import write_tiny_gguf
from hub_server import FakeHub

MakeProject = Callable[..., Path]


@pytest.fixture
def hf_project(hub: FakeHub, make_project: MakeProject, tmp_path: Path) -> Path:
    data = write_tiny_gguf(tmp_path / "a.gguf").read_bytes()
    hub.add_commit("org/repo", {"a-Q4_K_M.gguf": data, "README.md": b"readme"})
    url = hub.add_url_file("tiny.gguf", write_tiny_gguf(tmp_path / "b.gguf", seed=1).read_bytes())
    return make_project(
        f'phi = {{ hf = "org/repo", file = "*Q4_K_M.gguf" }}\ntiny = {{ url = "{url}" }}\n'
        'local = { path = "models/local.gguf" }\n'
    )


def test_lock_twice_is_byte_identical_and_check_passes(hf_project: Path) -> None:
    write_tiny_gguf(hf_project / "models" / "local.gguf", seed=2)
    assert run(hf_project, "lock", "--check").exit_code == 1  # missing lock
    first = run(hf_project, "lock")
    assert first.exit_code == 0, first.output
    assert "phi: pinned" in first.output
    lock_bytes = (hf_project / "models.lock").read_bytes()
    again = run(hf_project, "lock")
    assert again.exit_code == 0
    assert (hf_project / "models.lock").read_bytes() == lock_bytes
    check = run(hf_project, "lock", "--check")
    assert check.exit_code == 0, check.output


def test_check_reports_what_differs(hf_project: Path) -> None:
    write_tiny_gguf(hf_project / "models" / "local.gguf")
    assert run(hf_project, "lock").exit_code == 0
    pyproject = hf_project / "pyproject.toml"
    text = pyproject.read_text().replace('file = "*Q4_K_M.gguf"', 'file = "a-Q4_K_M.gguf"')
    pyproject.write_text(text.replace("local = ", "# local = ") + 'new = { path = "n.gguf" }\n')
    before = (hf_project / "models.lock").read_bytes()
    result = run(hf_project, "lock", "--check")
    assert result.exit_code == 1
    assert "phi: spec changed" in result.output
    assert "new: declared but not locked" in result.output
    assert "local: locked but no longer declared" in result.output
    assert (hf_project / "models.lock").read_bytes() == before


def test_upgrade_moves_hf_revision(hub: FakeHub, hf_project: Path, tmp_path: Path) -> None:
    write_tiny_gguf(hf_project / "models" / "local.gguf")
    run(hf_project, "lock")
    old = (hf_project / "models.lock").read_text()
    new_data = write_tiny_gguf(tmp_path / "c.gguf", seed=5).read_bytes()
    commit = hub.add_commit("org/repo", {"a-Q4_K_M.gguf": new_data})
    run(hf_project, "lock")
    assert (hf_project / "models.lock").read_text() == old  # pins of unchanged specs are kept
    result = run(hf_project, "lock", "--upgrade", "phi")
    assert result.exit_code == 0
    text = (hf_project / "models.lock").read_text()
    assert commit in text and hashlib.sha256(new_data).hexdigest() in text
    assert run(hf_project, "lock", "--upgrade", "--check").exit_code == 2


def test_pull_verify_list_and_mismatch(hf_project: Path) -> None:
    local = write_tiny_gguf(hf_project / "models" / "local.gguf")
    run(hf_project, "lock")
    listing = run(hf_project, "list")
    assert "missing" in listing.output and "verified" in listing.output  # hf missing, url cached
    missing = run(hf_project, "verify")
    assert missing.exit_code == 1 and "smallmodel pull phi" in missing.output
    pulled = run(hf_project, "pull")
    assert pulled.exit_code == 0, pulled.output
    assert run(hf_project, "verify").exit_code == 0
    assert run(hf_project, "verify", "--full").exit_code == 0
    table = run(hf_project, "list").output.splitlines()
    assert table[0].split() == ["NAME", "SHA256", "SIZE", "SOURCE", "STATUS"]
    assert all(line.rstrip().endswith("verified") for line in table[1:])

    expected = hashlib.sha256(local.read_bytes()).hexdigest()
    write_tiny_gguf(local, seed=9)
    bad = run(hf_project, "verify", "local")
    assert bad.exit_code == 1
    assert expected in bad.output and hashlib.sha256(local.read_bytes()).hexdigest() in bad.output
    assert str(local) in bad.output


def test_usage_and_config_errors_exit_2(hf_project: Path, tmp_path: Path) -> None:
    assert run(hf_project, "lock", "nope").exit_code == 2
    assert run(hf_project, "frobnicate").exit_code == 2
    assert run(hf_project, "verify").exit_code == 2  # no lock yet
    (hf_project / "pyproject.toml").write_text("[tool.smallmodel.models\n")
    broken = run(hf_project, "list")
    assert broken.exit_code == 2 and "line 1" in broken.output


def test_corrupt_lock_names_model_and_field(hf_project: Path) -> None:
    write_tiny_gguf(hf_project / "models" / "local.gguf")
    run(hf_project, "lock")
    lock = hf_project / "models.lock"
    text = lock.read_text()
    sha_line = next(line for line in text.splitlines() if line.startswith("sha256"))
    lock.write_text(text.replace(sha_line, 'sha256 = "abc"', 1))
    result = run(hf_project, "verify")
    assert result.exit_code == 2
    assert "model 'local' field sha256" in result.output
    assert run(hf_project, "lock", "--check").exit_code == 1


def test_hf_token_is_sent_but_never_written(
    hub: FakeHub, hf_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "hf_RecognisableSecret0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    hub.required_token = token
    write_tiny_gguf(hf_project / "models" / "local.gguf")
    outputs = [run(hf_project, *args) for args in (["lock"], ["pull"], ["verify"], ["list"])]
    assert [r.exit_code for r in outputs] == [0, 0, 0, 0], [r.output for r in outputs]
    hub_requests = [r for r in hub.requests if "/org/repo" in r.path]
    assert hub_requests
    assert all(r.headers.get("authorization") == f"Bearer {token}" for r in hub_requests)
    assert not any("authorization" in r.headers for r in hub.requests if "/files/" in r.path)
    for result in outputs:
        assert token not in result.output
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert token.encode() not in path.read_bytes(), path


def test_console_script_subprocess(hf_project: Path) -> None:
    write_tiny_gguf(hf_project / "models" / "local.gguf")
    script = Path(sys.executable).parent / "smallmodel"
    if not script.exists():
        pytest.skip("the smallmodel console script is not installed in this environment")
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(
        [str(script), "lock"], cwd=hf_project, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    verify = subprocess.run(
        [str(script), "verify"], cwd=hf_project, env=env, capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 1
    assert "smallmodel pull phi" in verify.stderr and "Traceback" not in verify.stderr
    pulled = subprocess.run(
        [str(script), "pull"], cwd=hf_project, env=env, capture_output=True, text=True, timeout=60
    )
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stderr == ""  # quiet when not a terminal
