"""The llama-server backend: one model served by llama.cpp's own HTTP server.

Managed (``backend = "llama-server"``): the harness starts the server on 127.0.0.1 with the
verified pinned file and the command line of ``llama_server.server_arguments``, and stops it at
session end. Remote (``server = "http://HOST:PORT"``): a running server the harness does not
start; it may be shared by many CI jobs, so nothing here depends on server-side state between
requests (no prompt cache, one request per call, nothing retried).

Greedy decoding on the server is the temperature sampler at 0 (the argmax, lowest id on ties,
as in-process), with every other sampler parameter sent explicitly. Logprobs are llama-server's
pre-sampling probabilities over the whole vocabulary. Teacher forcing sends a grammar of token
ids (``<[id]>``), so the server decodes exactly the given tokens in one request and reports how
it rated each: the incremental path, exact, one prompt evaluation per call. docs/backends.md
lists what differs from the in-process engine.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.fingerprint import FINGERPRINT_VERSION, cpu_facts, sha256_file
from pytest_smallmodel.common.results import (
    FinishReason,
    RepackDecision,
    ScoredStep,
    Step,
    Timings,
    TokenLogprob,
)
from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.engine.backend import Capabilities, Decoding, Forcing
from pytest_smallmodel.engine.crash import (
    CrashDiagnosis,
    EngineCrash,
    crashed_server_hint,
    diagnose,
)
from pytest_smallmodel.engine.served.api import ServerAPI, ServerError, ServerUnreachable
from pytest_smallmodel.engine.served.model import IdentityMismatch, ServedModel, logprob, piece
from pytest_smallmodel.engine.served.process import (
    ManagedServer,
    build_system_info,
    launch,
    server_libraries,
)
from pytest_smallmodel.engine.worker.parent import WorkerModel

# Added to a final end-of-generation token's logit so that the sampler picks it: far above any
# logit gap, finite so that llama.cpp's JSON accepts it.
_FORCING_BIAS = 1.0e6


def greedy_parameters(*, seed: int, top_k: int) -> dict[str, Any]:
    """Every sampler parameter of llama-server, set so that the choice is the plain argmax.

    The documented defaults disagree between versions (repeat_penalty, top_k, min_p), so none
    is left to the server; ``samplers`` keeps only the temperature sampler, which at 0 keeps the
    highest logit (lowest id on ties) and nothing else.
    """
    return {
        "samplers": ["temperature"],
        "temperature": 0.0,
        "dynatemp_range": 0.0,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "top_n_sigma": -1.0,
        "xtc_probability": 0.0,
        "repeat_penalty": 1.0,
        "repeat_last_n": 0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "mirostat": 0,
        "logit_bias": [],
        "ignore_eos": False,
        "n_keep": 0,
        "seed": seed,
        "n_probs": top_k,
        "post_sampling_probs": False,
        "cache_prompt": False,
        "return_tokens": True,
        "stream": False,
    }


def forcing_grammar(tokens: Sequence[int]) -> str:
    """A GBNF grammar that admits exactly ``tokens``, by id (llama.cpp's ``<[id]>`` terminals)."""
    return "root ::= " + " ".join(f"<[{int(token)}]>" for token in tokens)


def _top(entry: Mapping[str, Any], k: int) -> tuple[TokenLogprob, ...]:
    return tuple(
        TokenLogprob(int(item["id"]), piece(item), logprob(item.get("logprob")))
        for item in list(entry.get("top_logprobs") or [])[:k]
    )


class LlamaServerModel(ServedModel):
    """A model behind llama-server's own API; implements ``backend.Backend``."""

    engine = "llama-server"
    capabilities = Capabilities(
        batched_verify=False,
        limitations=(
            "llama-server has no batched teacher forcing: goldens are checked with one "
            "incremental teacher-forced request each (exact, at decoding speed)",
            "classify() scores each label with its own request (the server keeps no prompt "
            "state between requests)",
            "logprobs are over the whole vocabulary also under a grammar (extract): "
            "llama-server reports probabilities before the grammar",
        ),
    )

    def __init__(self, spec: LoadSpec, *, server: str | None) -> None:
        super().__init__(spec, WorkerModel(spec, defer_weights=True))
        settings = spec.settings
        self.remote = server
        self.stats.identity_unverified = server is not None
        self._lock = threading.RLock()
        self._crash: CrashDiagnosis | None = None
        self._template_file: Path | None = None
        self._process: ManagedServer | None = None
        self.repack: RepackDecision = self._vocab.info.repack
        try:
            if server is None:
                self._process = self._managed(spec.chat_template)
                self.api = ServerAPI(self._process.url, timeout=settings.timeout)
            else:
                self.api = ServerAPI(
                    server,
                    timeout=settings.timeout,
                    unreachable_hint=crashed_server_hint(server, cpu_facts()["flags"]),
                )
            self._props: Mapping[str, Any] = self._describe()
        except BaseException:
            self.close()
            raise
        self._info = self._model_info(self._fingerprint())
        self._checked_prompts: set[tuple[str, bool, bool]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    def _managed(self, chat_template: str | None) -> ManagedServer:
        if chat_template is not None:  # the spec's template file: the server must use it too
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
                "w", prefix=f"smallmodel-{self.name}-", suffix=".jinja", delete=False
            )
            with handle:
                handle.write(chat_template)
            self._template_file = Path(handle.name)
        started = time.perf_counter()
        process = launch(
            model=self.path,
            settings=self.settings,
            embedding=self.embedding,
            chat_template_file=self._template_file,
            name=self.name,
        )
        self.repack = process.repack
        self._count_start(started)
        return process

    def _restart(self, process: ManagedServer) -> None:
        started = time.perf_counter()
        process.start_on_free_port(timeout=self.settings.timeout)
        self._count_start(started)

    def _count_start(self, started: float) -> None:
        self.stats.worker_starts += 1
        self.stats.worker_start_seconds += time.perf_counter() - started
        self.stats.load_seconds += time.perf_counter() - started
        self.stats.weights_loaded = True

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        if self._process is not None:
            self._process.close()
        super().close()
        if self._template_file is not None:
            self._template_file.unlink(missing_ok=True)

    # -- identity and fingerprint ---------------------------------------------------------------

    def _describe(self) -> Mapping[str, Any]:
        """``/props`` and ``/v1/models``, checked against the pinned file's vocabulary."""
        props = self.api.get("/props")
        if not isinstance(props, dict):
            raise ServerError(f"{self.api.base_url}/props did not answer a JSON object")
        meta: Mapping[str, Any] = {}
        try:
            models = self.api.get("/v1/models")
        except ServerError as error:
            if error.status != 404:  # an older llama-server: the limitation is recorded
                raise
            models = None
        if isinstance(models, dict) and models.get("data"):
            meta = models["data"][0].get("meta") or {}
        props = {**props, "_meta": dict(meta)}
        self._check_identity(props)
        return props

    def _check_identity(self, props: Mapping[str, Any]) -> None:
        """What the server says of its model against the pinned file: vocabulary size, and the
        tokens of a probe text (a different tokenizer is a different model)."""
        where = f"the server at {self.api.base_url}"
        meta = dict(props.get("_meta") or {})
        meta.setdefault("ftype", props.get("model_ftype"))
        self.check_served_model(
            meta, where=where, served=props.get("model_path") or props.get("model_alias")
        )
        probe = "Identity probe: 12 apples, naïve café, <|im_end|>."
        mine = self._vocab.tokenize(probe, add_bos=False, special=False)
        theirs = self._server_tokens(probe, add_special=False, parse_special=False)
        if theirs is not None and mine != theirs:
            position = next(
                (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                min(len(mine), len(theirs)),
            )
            raise IdentityMismatch(
                f"{where} tokenizes differently from the pinned file of {self.name}@"
                f"{self.sha256[:8]} (first difference at token {position}): it serves another "
                "model. Point the spec's `server` at the server of the pinned file"
            )

    @property
    def identity(self) -> str:
        """``verified``: the harness started the server with the verified file. ``unverified``:
        a running server, which cannot prove which bytes it serves."""
        return "verified" if self.remote is None else "unverified"

    def _fingerprint(self) -> dict[str, Any]:
        props = self._props
        template = props.get("chat_template")
        meta = props.get("_meta") or {}
        generation = (props.get("default_generation_settings") or {}).get("params") or {}
        server: dict[str, Any] = {
            "build_info": props.get("build_info"),
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()
            if isinstance(template, str)
            else None,
            "n_ctx": (props.get("default_generation_settings") or {}).get("n_ctx"),
            "n_vocab": meta.get("n_vocab"),
            "model_ftype": props.get("model_ftype"),
            "default_generation_settings": {
                key: value for key, value in sorted(generation.items()) if key != "seed"
            },
        }
        record: dict[str, Any] = {
            "version": FINGERPRINT_VERSION,
            "model": self.name,
            "sha256": self.sha256,
            "engine": self.engine,
            "api": "llama-server",
            "identity": self.identity,
            "server": server,
            "settings": dict(sorted(self.settings.numeric().items())),
            "n_threads": self.settings.threads(),
        }
        if self._process is not None:
            binary = self._process.binary
            record["binary_sha256"] = sha256_file(binary)
            record["libraries"] = server_libraries(binary, self._process.pid)
            record["system_info"] = build_system_info(binary)
            record["command"] = _portable_command(self._process.arguments)
            record["repack"] = self.repack.enabled
            record["cpu"] = cpu_facts()
            record["backend"] = "CPU" if self.settings.n_gpu_layers == 0 else "GPU"
        else:
            record["server_url"] = self.remote
        missing = [
            f"/props has no {key} (an older llama-server): not in the fingerprint"
            for key in ("build_info", "chat_template", "default_generation_settings")
            if props.get(key) is None
        ]
        if not meta:
            missing.append(
                "/v1/models says nothing of the model (an older llama-server): the vocabulary "
                "size, training context and file type were not checked against the pinned file"
            )
        record["limitations"] = [*self.capabilities.limitations, *missing]
        return record

    # -- requests -------------------------------------------------------------------------------

    def _call(self, during: str, path: str, body: Mapping[str, Any], timeout: float | None) -> Any:
        """One request; a managed server that died or hung fails this call with a diagnosis and
        is started again by the next one (after two crashes the model's tests fail fast)."""
        with self._lock:
            if self._crash is not None and self.stats.crashes >= 2:
                self._crash = self._crash.again()
                raise EngineCrash(self._crash)
            process = self._process
            if process is not None and process.exit_code() is not None:
                # It died since the last call (a signal, the OOM killer): this call fails with
                # the diagnosis, as if it had died during it; the next one starts it again.
                raise self._crashed(
                    process, f"{during} (the server had died since the last call)", None
                )
            if process is not None and process.pid is None:
                self._restart(process)
                self.api = ServerAPI(process.url, timeout=self.settings.timeout)
            limit = self.settings.timeout if timeout is None else timeout
            try:
                return self.api.post(path, body, timeout=limit)
            except ServerUnreachable as error:
                if process is None:
                    raise
                timed_out = process.exit_code() is None and "did not answer" in str(error)
                if not timed_out:
                    # The connection broke: give the process a moment to be reaped.
                    for _ in range(50):
                        if process.exit_code() is not None:
                            break
                        time.sleep(0.02)
                raise self._crashed(process, during, limit if timed_out else None) from None

    def _crashed(self, process: ManagedServer, during: str, timed_out: float | None) -> EngineCrash:
        diagnosis = diagnose(
            model=self.spec.label,
            call=during,
            returncode=process.exit_code(),
            timed_out=timed_out,
            settings={**self.settings.numeric(), "timeout": self.settings.timeout},
            log=(tuple(process.log_lines()), ()),
            hints=process.hints,
            crash_count=self.stats.crashes + 1,
            process="llama-server",
        )
        process.stop()
        self.stats.crashes += 1
        self._crash = diagnosis
        return EngineCrash(diagnosis)

    def _completion(
        self,
        during: str,
        prompt_tokens: Sequence[int],
        *,
        n_predict: int,
        top_k: int,
        grammar: str | None = None,
        stop: Sequence[str] = (),
        logit_bias: Sequence[tuple[int, float]] = (),
        timeout: float | None,
    ) -> Mapping[str, Any]:
        body: dict[str, Any] = {
            "prompt": list(prompt_tokens),
            "n_predict": n_predict,
            "stop": list(stop),
            **greedy_parameters(seed=self.settings.seed, top_k=top_k),
        }
        if grammar is not None:
            body["grammar"] = grammar
        if logit_bias:
            body["logit_bias"] = [[token, bias] for token, bias in logit_bias]
        answer = self._call(during, "/completion", body, timeout)
        if not isinstance(answer, dict):
            raise ServerError(f"{self.api.base_url}/completion did not answer a JSON object")
        timings = answer.get("timings") or {}
        cached = timings.get("cache_n")
        if cached:
            raise EngineError(
                f"the server at {self.api.base_url} reused {cached} cached prompt tokens although "
                "the request disabled its prompt cache: its results are not reproducible. Start "
                "it with --parallel 1 --no-cache-prompt --cache-ram 0"
            )
        if "completion_probabilities" not in answer and n_predict > 0:
            raise ServerError(
                f"the server at {self.api.base_url} returned no token probabilities (an older "
                "llama-server without `n_probs`): pytest-smallmodel needs a llama-server that "
                "reports completion_probabilities"
            )
        return answer

    def _check_prompt(self, text: str, tokens: Sequence[int], add_bos: bool, special: bool) -> None:
        """The harness tokenizes; the server's ``/tokenize`` must agree (once per text)."""
        key = (text, add_bos, special)
        if key in self._checked_prompts:
            return
        theirs = self._server_tokens(text, add_special=add_bos, parse_special=special)
        if theirs is not None and list(theirs) != list(tokens):
            raise IdentityMismatch(
                f"the server at {self.api.base_url} tokenizes this prompt differently from the "
                f"pinned file of {self.name}@{self.sha256[:8]} ({len(theirs)} vs {len(tokens)} "
                "tokens): it serves another model or tokenizer"
            )
        self._checked_prompts.add(key)

    def _server_tokens(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        answer = self._call(
            "tokenize",
            "/tokenize",
            {"content": text, "add_special": add_special, "parse_special": parse_special},
            None,
        )
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            # Not a server of another model: not llama.cpp's API at all (a proxy's catch-all
            # route, a health endpoint, another service on the port).
            shown = json.dumps(answer, ensure_ascii=False)
            raise ServerError(
                f"the server at {self.api.base_url} does not speak llama.cpp's API: POST "
                f"/tokenize answered {shown[:200]} where llama-server answers "
                '{"tokens": [...]}. Point the spec\'s `server` at a llama-server'
            )
        return [int(t) for t in tokens]

    # -- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        tokens = self._vocab.tokenize(text, add_bos=add_bos, special=special)
        self._check_prompt(text, tokens, add_bos, special)
        return tokens

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        rendered = self._vocab.render_chat(messages)
        answer = self._call(
            "render_chat", "/apply-template", {"messages": [dict(m) for m in messages]}, None
        )
        served = answer.get("prompt") if isinstance(answer, dict) else None
        if isinstance(served, str) and served != rendered:
            raise EngineError(
                f"llama-server renders this chat differently from the harness (model "
                f"{self.name}): harness {rendered!r}, server {served!r}. The server uses another "
                "chat template: start it with the GGUF's template (--jinja) or name the same "
                "template file in the spec"
            )
        return rendered

    # -- generation -----------------------------------------------------------------------------

    def decode(
        self, prompt_tokens: Sequence[int], decoding: Decoding, *, timeout: float | None = None
    ) -> tuple[list[Step], FinishReason, Timings]:
        max_tokens, stop, top_k = decoding.max_tokens, decoding.stop, decoding.top_k
        schema = decoding.schema
        if max_tokens <= 0:
            raise EngineError(f"max_tokens must be positive, got {max_tokens}")
        room = self.settings.n_ctx - len(prompt_tokens)
        if room <= 0:
            raise EngineError(
                f"the prompt is {len(prompt_tokens)} tokens but the context is "
                f"n_ctx={self.settings.n_ctx}: shorten the prompt or raise n_ctx"
            )
        grammar = None if schema is None else _schema_grammar(schema)
        answer = self._completion(
            "decode",
            prompt_tokens,
            n_predict=min(max_tokens, room),
            top_k=top_k,
            grammar=grammar,
            stop=stop,
            timeout=timeout,
        )
        entries = list(answer.get("completion_probabilities") or [])
        generated = [int(t) for t in answer.get("tokens") or []]
        if len(entries) < len(generated):
            # A stop string ends the output: llama-server drops the last entries' probabilities
            # (as many as the stop string has tokens). The same tokens again without the stop
            # strings return them all; greedy decoding makes the second answer the first.
            answer = self._completion(
                "decode",
                prompt_tokens,
                n_predict=len(generated),
                top_k=top_k,
                grammar=grammar,
                timeout=timeout,
            )
            entries = list(answer.get("completion_probabilities") or [])[: len(generated)]
        steps = [
            Step(int(e["id"]), piece(e), logprob(e.get("logprob")), _top(e, top_k)) for e in entries
        ]
        return self.decoded(steps, stop, answer, finish="length")

    def score(
        self, prompt_tokens: Sequence[int], forcing: Forcing, *, timeout: float | None = None
    ) -> list[ScoredStep]:
        tokens, top_k = forcing.tokens, forcing.top_k
        """Teacher forcing: the server decodes exactly ``tokens`` under a grammar of their ids
        and reports, per step, the forced token's and the best tokens' logprobs.

        An end-of-generation token cannot be a grammar terminal (llama.cpp accepts one only once
        the grammar is complete), so a final end token is forced by a logit bias after the
        grammar ends. Both act in the sampler only; the logprobs reported are the model's.
        """
        if not tokens:
            return []
        forced = list(tokens)
        bias: list[tuple[int, float]] = []
        if self.is_end(forced[-1]):
            bias = [(forced.pop(), _FORCING_BIAS)]
        answer = self._completion(
            "teacher forcing",
            prompt_tokens,
            n_predict=len(tokens),
            top_k=max(top_k, 1),
            grammar=forcing_grammar(forced) if forced else None,
            logit_bias=bias,
            timeout=timeout,
        )
        scored: list[ScoredStep] = []
        for index, entry in enumerate(list(answer.get("completion_probabilities") or [])):
            if index >= len(tokens) or int(entry["id"]) != int(tokens[index]):
                break  # the server could not follow the tokens (context full): stop here
            top = _top(entry, top_k)
            golden = TokenLogprob(int(entry["id"]), piece(entry), logprob(entry.get("logprob")))
            best = top[0] if top else golden
            scored.append(ScoredStep(index=index, golden=golden, best=best, top=top))
        return scored

    def label_logprob(
        self, prompt_tokens: Sequence[int], label: Sequence[int], timeout: float | None = None
    ) -> float:
        scored = self.score(prompt_tokens, Forcing(tuple(label), top_k=1), timeout=timeout)
        if len(scored) < len(label):
            raise EngineError(
                f"llama-server could not score all {len(label)} tokens of a label "
                f"(model {self.name}): the context is full"
            )
        return sum(step.golden.logprob for step in scored)

    def embed(self, text: str, *, timeout: float | None = None) -> list[float]:
        self.check_embedding()
        tokens = self.tokenize(text)
        answer = self._call(
            "embed", "/embedding", {"content": tokens, "embd_normalize": -1}, timeout
        )
        items = answer if isinstance(answer, list) else [answer]
        vector = items[0].get("embedding") if items and isinstance(items[0], dict) else None
        if isinstance(vector, list) and vector and isinstance(vector[0], list):
            if len(vector) != 1:
                raise EngineError(
                    f"model {self.name!r} returns per-token embeddings (no pooling): set "
                    "pooling = 'mean' (or 'cls', 'last') in its settings"
                )
            vector = vector[0]
        if not isinstance(vector, list):
            raise ServerError(f"{self.api.base_url}/embedding answered no embedding")
        return self.finite_embedding(vector)


def _schema_grammar(schema: Mapping[str, Any]) -> str:
    from pytest_smallmodel.engine.worker.runtime import schema_grammar

    return schema_grammar(schema)


def _portable_command(arguments: Sequence[str]) -> list[str]:
    """The command line without what differs between runs of the same setup (port, file path,
    thread count): what is left can change tokens."""
    varying = {"--port": "PORT", "--model": "MODEL", "--threads": "N", "--threads-batch": "N"}
    shown: list[str] = []
    replace_next: str | None = None
    for argument in arguments:
        if replace_next is not None:
            shown.append(replace_next)
            replace_next = None
            continue
        shown.append(argument)
        replace_next = varying.get(argument)
    if "--chat-template-file" in shown:
        shown[shown.index("--chat-template-file") + 1] = "TEMPLATE"
    return shown
