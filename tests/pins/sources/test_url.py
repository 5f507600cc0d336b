"""The ``url`` kind against plain downloads from the fake Hub's /files/."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hub_server import FakeHub, Fault
from source_helpers import MakeProject, gguf_bytes, no_temp_files, project_with

from pytest_smallmodel.common.errors import SourceError
from pytest_smallmodel.pins.sources import base, local_path, pull_model, resolve_model, verify_model


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
    monkeypatch.setattr(base, "HTTP_TIMEOUT_S", 0.3)
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
