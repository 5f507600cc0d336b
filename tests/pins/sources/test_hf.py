"""The ``hf`` kind against a fake Hub on loopback (tests/hub_server.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from gguf_factory import DEFAULT_CHAT_TEMPLATE, write_tiny_gguf
from hub_server import FakeHub, Fault, HubFile
from source_helpers import MakeProject, gguf_bytes, no_temp_files, project_with

from pytest_smallmodel.common.errors import SourceError
from pytest_smallmodel.pins.sources import (
    is_pin_fresh,
    local_path,
    pull_model,
    resolve_model,
    verify_model,
)


def test_hf_lock_uses_metadata_and_range_not_full_download(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path
) -> None:
    data = write_tiny_gguf(
        tmp_path / "big.gguf",
        chat_template=DEFAULT_CHAT_TEMPLATE,
        tensor_elements=2 << 20,
        n_tensors=2,
    ).read_bytes()
    commit = hub.add_commit("org/repo", {"model-Q4_K_M.gguf": data, "other.gguf": b"x"})
    project = project_with(make_project, 'm = { hf = "org/repo", file = "*Q4_K_M.gguf" }')
    pin = resolve_model(project, project.models["m"])
    assert pin.sha256 == hashlib.sha256(data).hexdigest()
    assert pin.size == len(data)
    assert dict(pin.source) == {
        "hf": "org/repo",
        "file": "*Q4_K_M.gguf",
        "revision": "main",
        "commit": commit,
        "filename": "model-Q4_K_M.gguf",
    }
    assert (pin.architecture, pin.context_length, pin.file_type) == ("llama", 128, "ALL_F32")
    assert pin.chat_template_sha256 == hashlib.sha256(DEFAULT_CHAT_TEMPLATE.encode()).hexdigest()
    assert any("paths-info" in p for p in hub.paths_requested("POST"))
    assert hub.bytes_sent["model-Q4_K_M.gguf"] < len(data) // 2
    assert is_pin_fresh(project.models["m"], pin)
    assert local_path(project, pin) is None
    assert verify_model(project, pin).status == "missing"


def test_hf_pull_then_verify(hub: FakeHub, make_project: MakeProject, tmp_path: Path) -> None:
    data = gguf_bytes(tmp_path)
    hub.add_commit("org/repo", {"m.gguf": data}, revision="v1")
    project = project_with(
        make_project, 'm = { hf = "org/repo", file = "m.gguf", revision = "v1" }'
    )
    pin = resolve_model(project, project.models["m"])
    result = pull_model(project, pin)
    assert result.ok and result.path is not None
    assert result.path == local_path(project, pin)
    assert str(result.path).startswith(os.environ["HF_HUB_CACHE"])
    assert verify_model(project, pin).ok


def test_hf_non_lfs_file_is_hashed_by_streaming(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path
) -> None:
    data = gguf_bytes(tmp_path)
    hub.add_commit("org/repo", {"m.gguf": HubFile(data, lfs=False)})
    project = project_with(make_project, 'm = { hf = "org/repo", file = "m.gguf" }')
    pin = resolve_model(project, project.models["m"])
    assert pin.sha256 == hashlib.sha256(data).hexdigest() and pin.size == len(data)


def test_hf_tampered_download_is_deleted(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path
) -> None:
    data = gguf_bytes(tmp_path)
    hub.add_commit("org/repo", {"m.gguf": data})
    project = project_with(make_project, 'm = { hf = "org/repo", file = "m.gguf" }')
    pin = resolve_model(project, project.models["m"])
    hub.fail(r"/resolve/", Fault(replace_body=bytes(reversed(data))))
    result = pull_model(project, pin)
    assert result.status == "mismatch"
    assert "deleted" in result.message and pin.sha256 in result.message
    assert local_path(project, pin) is None
    blobs = Path(os.environ["HF_HUB_CACHE"]) / "models--org--repo" / "blobs"
    assert not list(blobs.iterdir())


@pytest.mark.parametrize(
    ("spec", "setup", "expected"),
    [
        ('{ hf = "org/missing", file = "m.gguf" }', None, "repository not found"),
        ('{ hf = "org/repo", file = "m.gguf", revision = "nope" }', None, "revision not found"),
        ('{ hf = "org/repo", file = "absent.gguf" }', None, "is not a file"),
        ('{ hf = "org/repo", file = "*.bin" }', None, "matches no file"),
        ('{ hf = "org/repo", file = "*.gguf" }', "two", "matches 2 files"),
        ('{ hf = "org/repo", file = "m.gguf" }', "500", "HTTP 500"),
        ('{ hf = "org/repo", file = "m.gguf" }', "token", "HF_TOKEN"),
    ],
)
def test_hf_resolution_errors(
    hub: FakeHub,
    make_project: MakeProject,
    tmp_path: Path,
    spec: str,
    setup: str | None,
    expected: str,
) -> None:
    files: dict[str, bytes | HubFile] = {"m.gguf": gguf_bytes(tmp_path)}
    if setup == "two":
        files["n.gguf"] = files["m.gguf"]
    hub.add_commit("org/repo", files)
    if setup == "500":
        hub.fail(r"/paths-info/", Fault(status=500))
    if setup == "token":
        hub.required_token = "hf_required"
    project = project_with(make_project, f"m = {spec}")
    with pytest.raises(SourceError) as info:
        resolve_model(project, project.models["m"])
    assert expected in str(info.value)
    assert info.value.exit_code == 1


def test_hf_interrupted_download_leaves_no_final_file(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = gguf_bytes(tmp_path)
    hub.add_commit("org/repo", {"m.gguf": data})
    project = project_with(make_project, 'm = { hf = "org/repo", file = "m.gguf" }')
    pin = resolve_model(project, project.models["m"])
    hub.fail(r"/resolve/", Fault(truncate_to=100))
    monkeypatch.setattr("time.sleep", lambda _s: None)  # huggingface_hub's resume back-off
    with pytest.raises(SourceError):
        pull_model(project, pin)
    assert local_path(project, pin) is None
    assert no_temp_files(Path(os.environ["HF_HUB_CACHE"]))
