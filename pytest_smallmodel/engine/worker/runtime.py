"""The in-process llama.cpp runtime: one ``Llama`` driven deterministically.

This module runs inside the engine worker process (``worker.py``), never in the pytest process:
llama.cpp is native code that can crash, hang or exhaust memory, and only the worker dies then.

Rules (each measured in docs/determinism.md):
- every call starts from an empty context (``reset()``): KV prefix reuse moves logits; the one
  exception, ``label_logprobs``, restores a saved copy of the prompt's KV cache, which gives
  the fresh context's numbers bit for bit (measured, and tested);
- the prompt is evaluated in ``n_batch`` chunks, then one token per step, always the same path,
  because batched teacher forcing is not equivalent to incremental decoding; the one batched
  path (``verify``) serves tolerance mode only, whose rule is a margin (docs/drift.md);
- greedy choice is ``argmax`` over the raw logits (lowest id wins a tie), so no sampler, seed,
  temperature or penalty can enter;
- every setting that changes numbers is passed explicitly (``EngineSettings``);
- non-finite logits (NaN, +inf) are an error naming the step, never a silent choice.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.fingerprint import (
    decide_repack,
    model_fingerprint,
    runtime_fingerprint,
)
from pytest_smallmodel.common.results import (
    FinishReason,
    RepackDecision,
    ScoredStep,
    Step,
    Timings,
    TokenLogprob,
)
from pytest_smallmodel.common.settings import (
    KV_CACHE_TYPES,
    POOLING_TYPES,
    LoadSpec,
)
from pytest_smallmodel.engine.backend import Decoding, Forcing, ModelInfo

_GGUF_MAGIC = b"GGUF"


class NonFiniteLogits(EngineError):
    """The model produced NaN or infinite logits: a broken file or a broken runtime."""


def repack_decision(setting: str | bool) -> RepackDecision:
    runtime = runtime_fingerprint()
    return decide_repack(setting, runtime["system_info"], runtime["cpu"]["flags"])


@contextlib.contextmanager
def _model_params(use_extra_bufts: bool) -> Iterator[None]:
    """Make ``Llama.__init__`` load with ``use_extra_bufts`` set (llama-cpp-python 0.3 has no
    keyword for it; the field exists on the ctypes struct it builds from the defaults)."""
    import llama_cpp.llama_cpp as lib  # the module Llama.__init__ calls through

    original = lib.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = use_extra_bufts
        return params

    lib.llama_model_default_params = patched
    try:
        yield
    finally:
        lib.llama_model_default_params = original


class _GrammarMask:
    """A llama.cpp grammar sampler used only to mask logits, so that the choice stays our argmax."""

    _dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)

    def __init__(self, vocab: Any, gbnf: str, n_vocab: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self._sampler:
            raise EngineError(f"llama.cpp rejected the grammar built from the schema:\n{gbnf}")
        self._data = np.zeros(n_vocab, dtype=self._dtype)
        self._data["id"] = np.arange(n_vocab, dtype=np.int32)

    def mask(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self._data["logit"] = logits
        self._data["p"] = 0.0
        array = self._lib.llama_token_data_array(
            data=self._data.ctypes.data_as(ctypes.POINTER(self._lib.llama_token_data)),
            size=len(self._data),
            selected=-1,
            sorted=False,
        )
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return np.array(self._data["logit"], dtype=np.float32)

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


@contextlib.contextmanager
def _grammar(
    vocab: Any, schema: Mapping[str, Any] | None, n_vocab: int
) -> Iterator[_GrammarMask | None]:
    if schema is None:
        yield None
        return
    mask = _GrammarMask(vocab, schema_grammar(schema), n_vocab)
    try:
        yield mask
    finally:
        mask.close()


def schema_grammar(schema: Mapping[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(dict(schema))))
    except Exception as error:  # the converter raises bare Exceptions for unsupported keywords
        raise EngineError(f"cannot build a grammar from the JSON Schema: {error}") from None


def check_gguf(path: Path) -> None:
    """Fail early, naming the file, for what llama.cpp would reject with a bare 'failed to load'."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise EngineError(f"cannot read model file {path}: {error.strerror}") from None
    if head != _GGUF_MAGIC:
        raise EngineError(
            f"{path} is not a GGUF file (magic {head!r}, expected b'GGUF'): "
            "lock a .gguf model file and run `smallmodel pull`"
        )


def _logsumexp(logits: npt.NDArray[np.float32]) -> float:
    """log(sum(exp(logits))): a token's logprob is its logit minus this (one pass, no copy kept)."""
    peak = float(logits.max())
    if not math.isfinite(peak):
        return peak
    return peak + math.log(float(np.exp(logits - peak).sum(dtype=np.float64)))


class LlamaRuntime:
    """One ``Llama`` for one (file, load settings); lives in the worker, one call at a time."""

    def __init__(self, spec: LoadSpec, *, defer_weights: bool = False) -> None:
        check_gguf(spec.path)
        self.name = spec.name
        self.path = spec.path
        self.settings = settings = spec.settings
        self.embedding = spec.embedding
        threads = settings.threads()
        self.repack = repack_decision(settings.repack)
        self._llama: Any = None
        # With deferred weights only the vocabulary and metadata are read (llama.cpp's
        # vocab_only: no tensor is mapped); tokenizing, rendering chat and building cache keys
        # need nothing else, so an unchanged rerun served from the result cache never loads them.
        self._model: Any = self._vocab_model() if defer_weights else self._load_weights()
        self._vocab = self._model.vocab
        self.n_vocab = int(self._model.n_vocab())
        self._piece_cache: dict[int, str] = {}
        embedded = self._model.metadata().get("tokenizer.chat_template")
        named = spec.chat_template
        self.chat_template = named if named is not None else embedded or None
        fingerprint = model_fingerprint(
            model=spec.name,
            sha256=spec.sha256,
            numeric_settings=settings.numeric(),
            n_threads=threads,
            repack=self.repack.enabled,
        )
        self.info = ModelInfo(
            n_vocab=self.n_vocab,
            bos_text=self.piece(self._model.token_bos()),
            eos_text=self.piece(self._model.token_eos()),
            add_bos=bool(self._model.add_bos_token()),
            chat_template=self.chat_template,
            fingerprint=fingerprint,
            repack=self.repack,
        )

    def _load_error(self, error: Exception) -> EngineError:
        return EngineError(
            f"llama.cpp could not load {self.path} ({error}): the file may be truncated or "
            "corrupt; run `smallmodel verify` and `smallmodel pull`"
        )

    def _vocab_model(self) -> Any:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            return LlamaModel(path_model=str(self.path), params=params, verbose=True)
        except (ValueError, RuntimeError) as error:
            raise self._load_error(error) from None

    @property
    def weights_loaded(self) -> bool:
        return self._llama is not None

    def _loaded(self) -> Any:
        """The ``Llama`` with its weights, loading them now if they were deferred."""
        if self._llama is None:
            vocab_only = self._model
            self._model = self._load_weights()
            self._vocab = self._model.vocab
            vocab_only.close()
        return self._llama

    def _load_weights(self) -> Any:
        """Load the weights and the context; returns the loaded model (``Llama._model``)."""
        import llama_cpp

        settings = self.settings
        threads = settings.threads()
        try:
            with _model_params(use_extra_bufts=self.repack.enabled):
                self._llama = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=settings.n_ctx,
                    n_batch=settings.n_batch,
                    n_ubatch=settings.n_ubatch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    flash_attn=settings.flash_attn,
                    type_k=KV_CACHE_TYPES[settings.type_k],
                    type_v=KV_CACHE_TYPES[settings.type_v],
                    n_gpu_layers=settings.n_gpu_layers,
                    swa_full=settings.swa_full,
                    seed=settings.seed,
                    embedding=self.embedding,
                    pooling_type=POOLING_TYPES[settings.pooling],
                    logits_all=False,
                    # The worker's stderr is a log file: llama.cpp's lines feed crash diagnoses.
                    verbose=True,
                )
        except (ValueError, RuntimeError) as error:
            raise self._load_error(error) from None
        return self._llama._model

    # -- tokens -------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(self._model.detokenize(list(tokens))).decode("utf-8", errors="replace")

    def piece(self, token: int) -> str:
        """The text of one token (special tokens shown as their markup, e.g. ``<|im_end|>``)."""
        cached = self._piece_cache.get(token)
        if cached is None:
            raw = self._model.detokenize([token], special=True)
            cached = bytes(raw).decode("utf-8", errors="backslashreplace")
            self._piece_cache[token] = cached
        return cached

    def is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self.chat_template is None:
            raise EngineError(
                f"model {self.name!r} has no chat template in its GGUF "
                "(tokenizer.chat_template): name a template file in its spec "
                "(chat_template = 'templates/model.jinja') or use generate() with a plain prompt"
            )
        formatter = Jinja2ChatFormatter(
            template=self.chat_template,
            eos_token=self.info.eos_text,
            bos_token=self.info.bos_text,
            add_generation_prompt=True,
        )
        try:
            rendered = formatter(messages=[dict(m) for m in messages])  # type: ignore[misc]
        except Exception as error:  # jinja2 raises many kinds; the template is user data
            raise EngineError(
                f"model {self.name!r}: the chat template failed to render these messages: "
                f"{type(error).__name__}: {error}"
            ) from None
        return str(rendered.prompt)

    # -- evaluation ---------------------------------------------------------------------------

    def _start(self, prompt_tokens: Sequence[int]) -> npt.NDArray[np.float32]:
        """Fresh context, evaluate the prompt, return the next-token logits."""
        if not prompt_tokens:
            raise EngineError("the prompt is empty after tokenization: give the model some text")
        if len(prompt_tokens) >= self.settings.n_ctx:
            raise EngineError(
                f"the prompt is {len(prompt_tokens)} tokens but the context is "
                f"n_ctx={self.settings.n_ctx}: shorten the prompt or raise n_ctx "
                "(in [tool.smallmodel.settings], the model's spec, or the marker)"
            )
        llama = self._loaded()
        llama.reset()
        llama.eval(list(prompt_tokens))
        return self._logits(0, len(prompt_tokens))

    def _advance(self, token: int, step: int, position: int) -> npt.NDArray[np.float32]:
        self._llama.eval([token])
        return self._logits(step, position)

    def _logits(self, step: int, position: int, raw: Any = None) -> npt.NDArray[np.float32]:
        """A copy of one row of logits (the last output unless ``raw`` points at another)."""
        if raw is None:
            raw = self._llama._ctx.get_logits()
        logits = np.array(np.ctypeslib.as_array(raw, shape=(self.n_vocab,)), dtype=np.float32)
        # max() propagates NaN and is +inf if any logit is: one cheap pass catches both.
        peak = float(logits.max())
        if not math.isfinite(peak):
            what = "NaN" if math.isnan(peak) else "infinite"
            raise NonFiniteLogits(
                f"model {self.name!r} produced {what} logits at step {step} of the output "
                f"(context position {position}): the model file or the llama.cpp runtime is "
                "broken. Check the pin with `smallmodel verify`, re-lock a known-good file, "
                "and run `smallmodel doctor`"
            )
        return logits

    def _top(
        self, logits: npt.NDArray[np.float32], logsumexp: float, k: int
    ) -> tuple[TokenLogprob, ...]:
        """The k best tokens, best first; argmax takes the lowest id among equal logits, so ties
        list the same way everywhere. k argmax passes beat a partition of the whole vocabulary."""
        remaining = logits.copy()
        top = []
        for _ in range(min(k, len(remaining))):
            token = int(remaining.argmax())
            logit = float(remaining[token])
            if not math.isfinite(logit):
                break
            top.append(TokenLogprob(token, self.piece(token), logit - logsumexp))
            remaining[token] = -np.inf
        return tuple(top)

    def _scored(
        self, logits: npt.NDArray[np.float32], mask: _GrammarMask | None, step: int
    ) -> tuple[npt.NDArray[np.float32], float]:
        """The logits that decide this step (grammar-masked if any) and their logsumexp."""
        if mask is None:
            return logits, _logsumexp(logits)
        allowed = mask.mask(logits)
        logsumexp = _logsumexp(allowed)
        if not math.isfinite(logsumexp):
            raise EngineError(
                f"the grammar allows no token at step {step} of the output: the schema cannot "
                "be completed from here (raise max_tokens or simplify the schema)"
            )
        return allowed, logsumexp

    def decode(
        self, prompt_tokens: Sequence[int], decoding: Decoding
    ) -> tuple[list[Step], FinishReason, Timings]:
        """Greedy decoding from ``prompt_tokens``; ``schema`` (JSON Schema) restricts choices."""
        max_tokens, stop, top_k, schema = (
            decoding.max_tokens,
            decoding.stop,
            decoding.top_k,
            decoding.schema,
        )
        if max_tokens <= 0:
            raise EngineError(f"max_tokens must be positive, got {max_tokens}")
        with _grammar(self._vocab, schema, self.n_vocab) as mask:
            started = time.perf_counter()
            logits = self._start(prompt_tokens)
            prompt_done = time.perf_counter()
            steps: list[Step] = []
            finish: FinishReason = "length"
            room = self.settings.n_ctx - len(prompt_tokens)
            for index in range(min(max_tokens, room)):
                # Under a grammar, logprobs are over the allowed tokens: what decided the choice.
                allowed, logsumexp = self._scored(logits, mask, index)
                token = int(allowed.argmax())
                steps.append(
                    Step(
                        token,
                        self.piece(token),
                        float(allowed[token]) - logsumexp,
                        self._top(allowed, logsumexp, top_k),
                    )
                )
                if mask is not None:
                    mask.accept(token)
                if self.is_end(token) or (stop and self._hits_stop(steps, stop)):
                    finish = "stop"
                    break
                position = len(prompt_tokens) + len(steps)
                if len(steps) < max_tokens and position < self.settings.n_ctx:
                    logits = self._advance(token, len(steps), position)
            finished = time.perf_counter()
        timings = Timings(
            prompt_ms=(prompt_done - started) * 1000,
            decode_ms=(finished - prompt_done) * 1000,
            generated_tokens=len(steps),
        )
        return steps, finish, timings

    def _hits_stop(self, steps: Sequence[Step], stop: Sequence[str]) -> bool:
        text = self.detokenize([s.token for s in steps])
        return any(s in text for s in stop)

    def _score_step(
        self,
        logits: npt.NDArray[np.float32],
        mask: _GrammarMask | None,
        index: int,
        token: int,
        top_k: int,
    ) -> ScoredStep:
        """How this runtime rates the given ``token`` against its own best at one step."""
        allowed = logits if mask is None else mask.mask(logits)
        logsumexp = _logsumexp(allowed)
        best = int(allowed.argmax())
        return ScoredStep(
            index=index,
            golden=TokenLogprob(token, self.piece(token), float(allowed[token]) - logsumexp),
            best=TokenLogprob(best, self.piece(best), float(allowed[best]) - logsumexp),
            top=self._top(allowed, logsumexp, top_k),
        )

    def score(self, prompt_tokens: Sequence[int], forcing: Forcing) -> list[ScoredStep]:
        """Teacher forcing on the generation path: how this runtime rates each given token."""
        tokens, top_k, schema = forcing.tokens, forcing.top_k, forcing.schema
        with _grammar(self._vocab, schema, self.n_vocab) as mask:
            scored: list[ScoredStep] = []
            logits = self._start(prompt_tokens)
            for index, token in enumerate(tokens):
                scored.append(self._score_step(logits, mask, index, token, top_k))
                if not math.isfinite(scored[-1].golden.logprob):
                    break  # the grammar forbids the golden token: nothing later is comparable
                if mask is not None:
                    mask.accept(token)
                if index + 1 < len(tokens):
                    logits = self._advance(token, index + 1, len(prompt_tokens) + index + 1)
            return scored

    def verify(self, prompt_tokens: Sequence[int], forcing: Forcing) -> list[ScoredStep]:
        """Teacher forcing in one batched pass: the same ratings as ``score``, at prefill speed.

        The prompt and the given tokens (all but the last, whose successor is not needed) are
        evaluated in ``n_ubatch`` chunks; only the rows that predict a given token are output
        (per-token flags of llama.cpp's batch), and each is copied once. The numbers differ
        slightly from incremental evaluation (docs/determinism.md), so this serves tolerance
        mode only, never exact comparison.
        """
        import llama_cpp

        tokens, top_k, schema = forcing.tokens, forcing.top_k, forcing.schema

        if not prompt_tokens:
            raise EngineError("the prompt is empty after tokenization: give the model some text")
        if not tokens:
            return []
        sequence = [*prompt_tokens, *tokens[:-1]]
        if len(sequence) > self.settings.n_ctx:
            raise EngineError(
                f"the prompt plus the golden tokens is {len(sequence)} tokens but the context "
                f"is n_ctx={self.settings.n_ctx}"
            )
        llama = self._loaded()
        llama.reset()
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)  # an empty context, as _start has
        batch = llama._batch.batch  # room for n_batch tokens; n_ubatch <= n_batch
        chunk = max(1, min(self.settings.n_ubatch, llama.n_batch))
        first = len(prompt_tokens) - 1  # the position whose logits predict tokens[0]
        scored: list[ScoredStep] = []
        with _grammar(self._vocab, schema, self.n_vocab) as mask:
            for start in range(0, len(sequence), chunk):
                piece = sequence[start : start + chunk]
                batch.n_tokens = len(piece)
                for offset, token in enumerate(piece):
                    batch.token[offset] = token
                    batch.pos[offset] = start + offset
                    batch.n_seq_id[offset] = 1
                    batch.seq_id[offset][0] = 0
                    batch.logits[offset] = start + offset >= first
                status = llama_cpp.llama_decode(llama._ctx.ctx, batch)
                if status != 0:
                    raise EngineError(
                        f"llama_decode returned {status} for the batched teacher-forcing pass"
                    )
                for offset in range(max(0, first - start), len(piece)):
                    index = start + offset - first
                    row = llama_cpp.llama_get_logits_ith(llama._ctx.ctx, offset)
                    logits = self._logits(index, start + offset + 1, row)
                    step = self._score_step(logits, mask, index, tokens[index], top_k)
                    scored.append(step)
                    if not math.isfinite(step.golden.logprob):
                        llama.n_tokens = start + len(piece)
                        return scored  # the grammar forbids the golden token: stop here
                    if mask is not None:
                        mask.accept(tokens[index])
            llama.n_tokens = len(sequence)
        return scored

    def continuation_logprob(
        self, prompt_tokens: Sequence[int], continuation: Sequence[int]
    ) -> float:
        """Sum of the logprobs of ``continuation`` after the prompt, on the incremental path."""
        logits = self._start(prompt_tokens)
        return self._continue(logits, prompt_tokens, continuation)

    def _continue(
        self,
        logits: npt.NDArray[np.float32],
        prompt_tokens: Sequence[int],
        continuation: Sequence[int],
    ) -> float:
        total = 0.0
        for index, token in enumerate(continuation):
            total += float(logits[token]) - _logsumexp(logits)
            if index + 1 < len(continuation):
                logits = self._advance(token, index + 1, len(prompt_tokens) + index + 1)
        return total

    def label_logprobs(
        self, prompt_tokens: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[float]:
        """``continuation_logprob`` of each continuation, evaluating the shared prompt once.

        The prompt's KV cache is saved after evaluation (llama.cpp's per-sequence state) and
        restored before each further continuation, so every continuation starts from the same
        cells, positions and values as a fresh ``_start`` would give: the numbers are the ones
        ``continuation_logprob`` computes (tests/drift/test_batched.py compares them bit for bit).
        """
        import llama_cpp

        first = self._start(prompt_tokens)
        llama = self._llama
        ctx = llama._ctx.ctx
        size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
        saved = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(ctx, saved, size, 0))
        if written == 0 or written > size:
            raise EngineError("llama.cpp could not save the prompt's state for classify()")
        prompt_length = llama.n_tokens
        totals: list[float] = []
        for number, continuation in enumerate(continuations):
            if number:
                if int(llama_cpp.llama_state_seq_set_data(ctx, saved, written, 0)) != written:
                    raise EngineError(
                        "llama.cpp could not restore the prompt's state for classify()"
                    )
                llama.n_tokens = prompt_length
            totals.append(self._continue(first, prompt_tokens, continuation))
        return totals

    def embed(self, text: str) -> list[float]:
        if not self.embedding:
            raise EngineError(
                f"model {self.name!r} is not declared as an embedding model: "
                "add `embedding = true` to its spec in [tool.smallmodel.models]"
            )
        llama = self._loaded()
        llama.reset()
        vector = llama.embed(text, normalize=False, truncate=False)
        llama.reset()
        if vector and isinstance(vector[0], list):  # per-token embeddings: no pooling in the model
            raise EngineError(
                f"model {self.name!r} returns per-token embeddings (its GGUF sets no pooling): "
                "set pooling = 'mean' (or 'cls', 'last') in its settings"
            )
        values = [float(x) for x in vector]
        if not all(math.isfinite(x) for x in values):
            raise NonFiniteLogits(
                f"model {self.name!r} produced a non-finite embedding (NaN or infinite values): "
                "the model file or the llama.cpp runtime is broken; check `smallmodel verify`"
            )
        return values

    def close(self) -> None:
        llama = getattr(self, "_llama", None)
        if llama is not None:
            llama.close()  # closes the model it holds, which is self._model
            self._llama = None
        elif getattr(self, "_model", None) is not None:
            self._model.close()
        self._model = None
