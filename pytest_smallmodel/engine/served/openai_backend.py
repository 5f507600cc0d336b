"""A model behind an OpenAI-compatible endpoint (``api = "openai"``: llama-server's ``/v1``, vLLM).

The harness still tokenizes and renders chats itself from the pinned file (vocabulary only),
and sends token ids as the prompt of ``/v1/completions``, so a chat test sends the same prompt
as in-process; the server's own chat template is not used. Greedy decoding is temperature 0
with ``logprobs`` for the top-k. What the OpenAI API cannot do is a named limitation in the
fingerprint and in drift reports (docs/backends.md):

- no teacher forcing: a golden that diverges cannot be rated token by token, so tolerance mode
  passes only identical outputs, and ``classify()`` is refused;
- token ids: taken from llama-server's ``id`` fields; elsewhere each token's text must be one
  token of the pinned vocabulary, or the call fails saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.fingerprint import FINGERPRINT_VERSION, cpu_facts
from pytest_smallmodel.common.results import FinishReason, ScoredStep, Step, Timings, TokenLogprob
from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.engine.backend import Capabilities, Decoding, Forcing
from pytest_smallmodel.engine.crash import crashed_server_hint
from pytest_smallmodel.engine.served.api import ServerAPI, ServerError
from pytest_smallmodel.engine.served.model import ServedModel, logprob
from pytest_smallmodel.engine.worker.parent import WorkerModel

NO_TEACHER_FORCING = (
    "api = 'openai' cannot teacher-force (the OpenAI API scores no given tokens): a golden "
    "that diverges cannot be rated token by token, only identical outputs pass; use "
    "api = 'llama-server' for tolerance checks and classify()"
)


class Unsupported(EngineError):
    """The backend's API cannot answer this call (a named limitation, not a failure)."""


class OpenAIModel(ServedModel):
    """A model behind ``/v1/completions`` and ``/v1/embeddings``; implements ``backend.Backend``."""

    engine = "openai"
    capabilities = Capabilities(
        teacher_forcing=False, batched_verify=False, limitations=(NO_TEACHER_FORCING,)
    )

    def __init__(self, spec: LoadSpec, *, server: str) -> None:
        super().__init__(spec, WorkerModel(spec, defer_weights=True))
        settings = spec.settings
        self.stats.identity_unverified = True
        self.api = ServerAPI(
            server,
            timeout=settings.timeout,
            unreachable_hint=crashed_server_hint(server, cpu_facts()["flags"]),
        )
        try:
            self._model_id, meta = self._served_model()
        except BaseException:
            self.close()
            raise
        self._info = self._model_info(
            {
                "version": FINGERPRINT_VERSION,
                "model": self.name,
                "sha256": self.sha256,
                "engine": self.engine,
                "api": "openai",
                "identity": "unverified",
                "server": {"model_id": self._model_id, **{k: meta[k] for k in sorted(meta)}},
                "server_url": server,
                "settings": dict(sorted(settings.numeric().items())),
                "limitations": list(self.capabilities.limitations),
            }
        )

    def _served_model(self) -> tuple[str, dict[str, Any]]:
        """The served model's id and what the server says of it (llama-server's ``meta``),
        checked against the pinned file like a llama-server's."""
        answer = self.api.get("/v1/models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not data:
            raise ServerError(f"{self.api.base_url}/v1/models lists no model")
        first = data[0]
        meta = {
            key: value
            for key, value in (first.get("meta") or {}).items()
            if key in ("n_vocab", "n_ctx_train", "n_embd", "n_params", "size", "ftype")
        }
        self.check_served_model(
            meta, where=f"the server at {self.api.base_url}", served=first.get("id")
        )
        return str(first.get("id", "")), meta

    @property
    def pid(self) -> int | None:
        return None

    def decode(
        self, prompt_tokens: Sequence[int], decoding: Decoding, *, timeout: float | None = None
    ) -> tuple[list[Step], FinishReason, Timings]:
        max_tokens, stop, top_k = decoding.max_tokens, decoding.stop, decoding.top_k
        schema = decoding.schema
        body: dict[str, Any] = {
            "model": self._model_id,
            "prompt": list(prompt_tokens),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "n": 1,
            "seed": self.settings.seed,
            "logprobs": top_k,
            "stream": False,
        }
        # No `stop` for the server: endpoints cut the logprobs of a stop string's tokens
        # (llama-server drops as many entries as the string has tokens), so the stop rule of
        # the in-process engine is applied here, to all tokens.
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": dict(schema)},
            }
            # llama-server's /v1/completions reads the schema from here, not response_format.
            body["json_schema"] = dict(schema)
        answer = self.api.post("/v1/completions", body, timeout=timeout)
        try:
            choice = answer["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(
                f"{self.api.base_url}/v1/completions answered no choices: {str(answer)[:200]}"
            ) from None
        steps = self._steps(choice.get("logprobs"), top_k)
        finish: FinishReason = "stop" if choice.get("finish_reason") == "stop" else "length"
        return self.decoded(steps, stop, answer, finish=finish)

    def _steps(self, logprobs: Any, top_k: int) -> list[Step]:
        if not isinstance(logprobs, dict):
            raise ServerError(
                f"{self.api.base_url}/v1/completions returned no logprobs: the endpoint must "
                "support `logprobs` (OpenAI completions API)"
            )
        if isinstance(logprobs.get("content"), list):  # llama-server: ids included
            return [
                Step(
                    int(entry["id"]),
                    str(entry.get("token", "")),
                    logprob(entry.get("logprob")),
                    tuple(
                        TokenLogprob(int(t["id"]), str(t.get("token", "")), logprob(t["logprob"]))
                        for t in list(entry.get("top_logprobs") or [])[:top_k]
                    ),
                )
                for entry in logprobs["content"]
            ]
        # The legacy OpenAI form: token texts only.
        texts = list(logprobs.get("tokens") or [])
        values = list(logprobs.get("token_logprobs") or [])
        tops = list(logprobs.get("top_logprobs") or [{}] * len(texts))
        steps = []
        for text, value, top in zip(texts, values, tops, strict=False):
            alternatives = sorted((top or {}).items(), key=lambda item: -float(item[1]))[:top_k]
            steps.append(
                Step(
                    self._token_id(str(text)),
                    str(text),
                    logprob(value),
                    tuple(TokenLogprob(self._token_id(t), t, logprob(v)) for t, v in alternatives),
                )
            )
        return steps

    def _token_id(self, text: str) -> int:
        """The id of a token the endpoint named by its text only."""
        if text.startswith("token_id:") and text[9:].isdigit():  # vLLM's ids-as-text option
            return int(text[9:])
        ids = self._vocab.tokenize(text, add_bos=False, special=True)
        if len(ids) != 1:
            raise Unsupported(
                f"the endpoint at {self.api.base_url} names tokens by text only and {text!r} is "
                f"not one token of the pinned vocabulary of {self.name}: token ids cannot be "
                "recovered (a named limitation of api = 'openai'; use api = 'llama-server')"
            )
        return ids[0]

    def score(
        self, prompt_tokens: Sequence[int], forcing: Forcing, *, timeout: float | None = None
    ) -> list[ScoredStep]:
        raise Unsupported(NO_TEACHER_FORCING)

    def label_logprob(
        self, prompt_tokens: Sequence[int], label: Sequence[int], timeout: float | None = None
    ) -> float:
        raise Unsupported(f"classify() is not available: {NO_TEACHER_FORCING}")

    def embed(self, text: str, *, timeout: float | None = None) -> list[float]:
        self.check_embedding()
        answer = self.api.post(
            "/v1/embeddings",
            {"model": self._model_id, "input": text, "encoding_format": "float"},
            timeout=timeout,
        )
        try:
            return self.finite_embedding(answer["data"][0]["embedding"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ServerError(
                f"{self.api.base_url}/v1/embeddings answered no embedding: {str(answer)[:200]}"
            ) from None
