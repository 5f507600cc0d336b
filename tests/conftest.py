"""Shared fixtures. Keep each fixture small and documented; other modules append their own."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gguf_factory import DEFAULT_CHAT_TEMPLATE, write_tiny_gguf
from hub_server import FakeHub
from real_model import SMOLLM2_DISTRIBUTION, SMOLLM2_SHA256, smollm2_path

from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool

REQUIRE_ALL_ENV = "SMALLMODEL_REQUIRE_ALL"
REQUIRE_MODEL_ENV = "SMALLMODEL_REQUIRE_MODEL"  # the older name, still honoured


def skips_are_errors() -> bool:
    """Whether a test that cannot run here must fail instead of skipping: in CI (``CI=true``,
    as every hosted CI sets it) and wherever SMALLMODEL_REQUIRE_ALL=1 (``.ci/run``), so that a
    green run never hides a test that did not run. README, "What the tests need", lists what
    each group of tests needs."""
    return (
        os.environ.get(REQUIRE_ALL_ENV) == "1"
        or os.environ.get(REQUIRE_MODEL_ENV) == "1"
        or os.environ.get("CI", "").lower() in ("true", "1")
    )


def pytest_configure(config: pytest.Config) -> None:
    """Tests on the real model skip where it is not installed; where skips are errors, a missing
    model stops the run at once instead of failing every one of those tests."""
    if skips_are_errors() and smollm2_path() is None:
        raise pytest.UsageError(
            f"{SMOLLM2_DISTRIBUTION} is not installed, so every test on the real model would be "
            f"skipped, and skips are errors here (CI or {REQUIRE_ALL_ENV}=1): "
            "pip install -e '.[test]'"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Where skips are errors, a skipped test is reported as failed, with the skip's reason
    (which names what is missing and how to get it)."""
    report: pytest.TestReport = yield  # type: ignore[misc]
    if report.skipped and not hasattr(report, "wasxfail") and skips_are_errors():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"this test cannot run here and skips are errors (CI or {REQUIRE_ALL_ENV}=1): {reason}"
        )
    return report  # type: ignore[return-value]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake Hub on 127.0.0.1, selected through HF_ENDPOINT, with an isolated HF cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub().running() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        # huggingface_hub froze HF_ENDPOINT at import into these two constants; keep them
        # consistent so its own side requests and URL building also reach the fake.
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            fake.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        yield fake


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated SMALLMODEL_CACHE_DIR (url downloads, stat cache)."""
    cache = tmp_path / "smallmodel-cache"
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    """A tiny real GGUF file (llama, context 128, with a chat template)."""
    return write_tiny_gguf(tmp_path / "tiny.gguf", chat_template=DEFAULT_CHAT_TEMPLATE)


@pytest.fixture
def make_project(tmp_path: Path, model_cache: Path):  # type: ignore[no-untyped-def]
    """Write ``tmp_path/project/pyproject.toml`` with the given [tool.smallmodel] body."""

    def make(models_toml: str, extra_toml: str = "") -> Path:
        root = tmp_path / "project"
        root.mkdir(exist_ok=True)
        (root / "pyproject.toml").write_text(
            '[project]\nname = "demo"\nversion = "0"\n\n'
            f"{extra_toml}\n[tool.smallmodel.models]\n{models_toml}\n",
            encoding="utf-8",
        )
        return root

    return make


@pytest.fixture(scope="module")
def pool() -> Iterator[ModelPool]:
    """The engine's model pool, one per test module (each model loads once per module)."""
    models = ModelPool()
    yield models
    models.close()


@pytest.fixture(scope="module")
def smollm2(pool: ModelPool) -> ModelHandle:
    """The real SmolLM2 model with default settings (modules using it skip without it)."""
    path = smollm2_path()
    assert path is not None
    settings = EngineSettings()
    loaded = pool.get(
        LoadSpec(
            name="smollm2", path=path, sha256=SMOLLM2_SHA256, settings=settings, embedding=False
        )
    )
    return ModelHandle(loaded, settings)
