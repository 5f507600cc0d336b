"""What the backends that reach a model over HTTP share (``llama_backend``, ``openai_backend``).

The harness keeps tokenizing and rendering chats itself, from the pinned file loaded
vocabulary-only in an engine worker (no weights), so a served model's prompts are token for
token the in-process ones; the server only computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.results import FinishReason, Step, Timings
from pytest_smallmodel.common.settings import LoadSpec
from pytest_smallmodel.engine.backend import Loaded, ModelInfo
from pytest_smallmodel.pins.gguf_info import read_facts

if TYPE_CHECKING:
    from pytest_smallmodel.engine.worker.parent import WorkerModel


class IdentityMismatch(EngineError):
    """The server serves another model than the pinned file."""


class ServedModel(Loaded):
    """The shared half of a served backend: identity, settings, statistics and vocabulary."""

    _info: ModelInfo  # set by the subclass once the server has described itself

    def __init__(self, spec: LoadSpec, vocab: WorkerModel) -> None:
        super().__init__(spec)
        # The pinned file's tokenizer and chat template, in an engine worker without weights
        # (the backend module starts it: what it shares here only needs its vocabulary).
        self._vocab = vocab
        # Every call needs the vocabulary: start its worker now, and count it in the summary.
        self._vocab.info  # noqa: B018 - the property starts the worker
        self.stats.worker_starts = self._vocab.stats.worker_starts
        self.stats.worker_start_seconds = self._vocab.stats.worker_start_seconds
        self.stats.load_seconds = self._vocab.stats.load_seconds

    def _model_info(self, fingerprint: Mapping[str, Any]) -> ModelInfo:
        vocab = self._vocab.info
        return ModelInfo(
            n_vocab=vocab.n_vocab,
            bos_text=vocab.bos_text,
            eos_text=vocab.eos_text,
            add_bos=vocab.add_bos,
            chat_template=vocab.chat_template,
            fingerprint=fingerprint,
            repack=vocab.repack,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        return self.info.fingerprint

    @property
    def n_vocab(self) -> int:
        return self._vocab.info.n_vocab

    def weights_loaded(self) -> bool:
        return True  # the server holds them

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        return self._vocab.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._vocab.detokenize(tokens)

    def is_end(self, token: int) -> bool:
        return self._vocab.is_end(token)

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        return self._vocab.render_chat(messages)

    def cut_at_end(self, tokens: Sequence[int], stop: Sequence[str]) -> int | None:
        """The length at which the in-process engine would have stopped: after the first end
        token, or the first token whose text completes a stop string; None: it would not."""
        for index, token in enumerate(tokens):
            if self.is_end(token):
                return index + 1
            if stop and any(s in self.detokenize(tokens[: index + 1]) for s in stop):
                return index + 1
        return None

    def decoded(
        self,
        steps: list[Step],
        stop: Sequence[str],
        answer: Mapping[str, Any],
        *,
        finish: FinishReason,
    ) -> tuple[list[Step], FinishReason, Timings]:
        """A server's steps ended by the in-process stop rule, with llama-server's ``timings``
        (absent elsewhere: zero), counted in the summary."""
        end = self.cut_at_end([s.token for s in steps], stop)
        if end is not None:
            steps, finish = steps[:end], "stop"
        reported = answer.get("timings") or {}
        timings = Timings(
            prompt_ms=float(reported.get("prompt_ms", 0.0)),
            decode_ms=float(reported.get("predicted_ms", 0.0)),
            generated_tokens=len(steps),
        )
        self.stats.count_decode(timings)
        return steps, finish, timings

    def check_served_model(self, meta: Mapping[str, Any], *, where: str, served: object) -> None:
        """What a server says of its model (llama-server's ``/v1/models`` ``meta``: ``n_vocab``,
        ``n_ctx_train``, ``ftype``) against the pinned file; a difference is another model."""
        facts = read_facts(self.path)
        pinned_type = (facts.file_type or "").removeprefix("MOSTLY_")
        served_type = str(meta.get("ftype") or "")
        comparisons: list[tuple[str, Any, Any]] = [
            ("vocabulary size", meta.get("n_vocab"), self._vocab.info.n_vocab),
            ("training context length", meta.get("n_ctx_train"), facts.context_length),
        ]
        # llama_ftype_name() writes "Q4_1", "Q4_K - Medium", "all F32"; the GGUF header
        # MOSTLY_Q4_1, MOSTLY_Q4_K_M, ALL_F32: the served name's first word starts the pinned.
        served_word = served_type.split(" ")[0].upper()
        comparable = not any(word in served_type for word in ("guessed", "mix", "unknown"))
        if served_word and pinned_type and comparable and not pinned_type.startswith(served_word):
            comparisons.append(("file type", served_type, facts.file_type))
        for what, found, pinned in comparisons:
            if found is not None and pinned is not None and found != pinned:
                raise IdentityMismatch(
                    f"{where} serves another model than {self.name}@{self.sha256[:8]}: its "
                    f"{what} is {found}, the pinned file's {pinned} (served: {served}). Point "
                    "the spec's `server` at the server of the pinned file, or re-lock"
                )

    def check_embedding(self) -> None:
        if not self.embedding:
            raise EngineError(
                f"model {self.name!r} is not declared as an embedding model: "
                "add `embedding = true` to its spec in [tool.smallmodel.models]"
            )

    def finite_embedding(self, vector: Sequence[Any]) -> list[float]:
        values = [float(x) for x in vector]
        if not all(math.isfinite(x) for x in values):
            raise EngineError(f"model {self.name!r} produced a non-finite embedding")
        return values  # the call is counted once, by ModelHandle.embed, as for every backend

    def close(self) -> None:
        self._vocab.close()


def logprob(value: Any) -> float:
    """A logprob from JSON: servers write log(0) as null (JSON has no -inf)."""
    return -math.inf if value is None else float(value)


def piece(entry: Mapping[str, Any]) -> str:
    """A token's text from llama-server's ``bytes`` (exact), else its ``token`` string."""
    raw = entry.get("bytes")
    if isinstance(raw, list):
        return bytes(raw).decode("utf-8", errors="backslashreplace")
    return str(entry.get("token", ""))
