"""The deterministic engine: llama-cpp-python with greedy decoding and a fresh state for every call.

Rules (each measured in shared/notes/determinism.md):
- every call starts from an empty context (``reset()``): KV prefix reuse moves logits;
- the prompt is evaluated in ``n_batch`` chunks, then one token per step, always the same path,
  because batched teacher forcing is not equivalent to incremental decoding;
- greedy choice is ``argmax`` over the raw logits (lowest id wins a tie), so no sampler, seed,
  temperature or penalty can enter;
- every setting that changes numbers is passed explicitly (``EngineSettings``).
"""

from __future__ import annotations

import ctypes
import json
import math
import numbers
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import numpy as np
import numpy.typing as npt

from pytest_smallmodel.errors import EngineError
from pytest_smallmodel.fingerprint import model_fingerprint
from pytest_smallmodel.result_cache import ResultCache, cache_key
from pytest_smallmodel.results import (
    Embedding,
    ExtractedDict,
    ExtractedList,
    Extraction,
    FinishReason,
    Generation,
    Label,
    Provenance,
    Request,
    ScoredStep,
    Step,
    Timings,
    TokenLogprob,
)
from pytest_smallmodel.settings import KV_CACHE_TYPES, POOLING_TYPES, EngineSettings

Messages = Sequence[Mapping[str, Any]]
_T = TypeVar("_T")
PromptOrMessages = str | Messages

_GGUF_MAGIC = b"GGUF"


class ExtractionError(EngineError):
    """Constrained decoding produced something that is not valid against the schema."""


def _logsumexp(logits: npt.NDArray[np.float32]) -> float:
    """log(sum(exp(logits))): a token's logprob is its logit minus this (one pass, no copy kept)."""
    peak = float(logits.max())
    if not math.isfinite(peak):
        return peak
    return peak + math.log(float(np.exp(logits - peak).sum(dtype=np.float64)))


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


@dataclass
class ModelStats:
    load_seconds: float = 0.0
    calls: int = 0
    cached_calls: int = 0
    generated_tokens: int = 0
    decode_seconds: float = 0.0


class LoadedModel:
    """One ``Llama`` for one (file, load settings); not thread-safe, so calls are serialised."""

    def __init__(
        self, *, name: str, path: Path, sha256: str, settings: EngineSettings, embedding: bool
    ) -> None:
        check_gguf(path)
        import llama_cpp

        self.name = name
        self.path = path
        self.sha256 = sha256
        self.settings = settings
        self.embedding = embedding
        self.stats = ModelStats()
        self._lock = threading.Lock()
        started = time.perf_counter()
        threads = settings.threads()
        try:
            self._llama: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=settings.n_ctx,
                n_batch=settings.n_batch,
                n_ubatch=settings.n_ubatch,
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=settings.flash_attn,
                type_k=KV_CACHE_TYPES[settings.type_k],
                type_v=KV_CACHE_TYPES[settings.type_v],
                n_gpu_layers=settings.n_gpu_layers,
                seed=settings.seed,
                embedding=embedding,
                pooling_type=POOLING_TYPES[settings.pooling],
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise EngineError(
                f"llama.cpp could not load {path} ({error}): the file may be truncated or "
                "corrupt; run `smallmodel verify` and `smallmodel pull`"
            ) from None
        self.stats.load_seconds = time.perf_counter() - started
        self._vocab = self._llama._model.vocab
        self.n_vocab = int(self._llama.n_vocab())
        self.fingerprint = model_fingerprint(
            model=name, sha256=sha256, numeric_settings=settings.numeric(), n_threads=threads
        )
        self._piece_cache: dict[int, str] = {}

    # -- tokens -------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(self._llama.detokenize(list(tokens))).decode("utf-8", errors="replace")

    def piece(self, token: int) -> str:
        """The text of one token (special tokens shown as their markup, e.g. ``<|im_end|>``)."""
        cached = self._piece_cache.get(token)
        if cached is None:
            raw = self._llama.detokenize([token], special=True)
            cached = bytes(raw).decode("utf-8", errors="backslashreplace")
            self._piece_cache[token] = cached
        return cached

    def is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    @property
    def chat_template(self) -> str | None:
        template = self._llama.metadata.get("tokenizer.chat_template")
        return str(template) if template else None

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
        self._llama.reset()
        self._llama.eval(list(prompt_tokens))
        return self._logits()

    def _advance(self, token: int) -> npt.NDArray[np.float32]:
        self._llama.eval([token])
        return self._logits()

    def _logits(self) -> npt.NDArray[np.float32]:
        raw = self._llama._ctx.get_logits()
        return np.array(np.ctypeslib.as_array(raw, shape=(self.n_vocab,)), dtype=np.float32)

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

    def decode(
        self,
        prompt_tokens: Sequence[int],
        *,
        max_tokens: int,
        stop: Sequence[str],
        top_k: int,
        grammar: str | None = None,
    ) -> tuple[list[Step], FinishReason, Timings]:
        """Greedy decoding from ``prompt_tokens``; ``grammar`` (GBNF) restricts the choices."""
        if max_tokens <= 0:
            raise EngineError(f"max_tokens must be positive, got {max_tokens}")
        with self._lock:
            mask = _GrammarMask(self._vocab, grammar, self.n_vocab) if grammar else None
            try:
                return self._decode_locked(prompt_tokens, max_tokens, stop, top_k, mask)
            finally:
                if mask:
                    mask.close()

    def _decode_locked(
        self,
        prompt_tokens: Sequence[int],
        max_tokens: int,
        stop: Sequence[str],
        top_k: int,
        mask: _GrammarMask | None,
    ) -> tuple[list[Step], FinishReason, Timings]:
        started = time.perf_counter()
        logits = self._start(prompt_tokens)
        prompt_done = time.perf_counter()
        steps: list[Step] = []
        finish: FinishReason = "length"
        room = self.settings.n_ctx - len(prompt_tokens)
        for _ in range(min(max_tokens, room)):
            # Under a grammar, logprobs are over the allowed tokens: what decided the choice.
            allowed = logits if mask is None else mask.mask(logits)
            token = int(allowed.argmax())
            if not math.isfinite(allowed[token]):
                raise EngineError("the grammar allows no token at this point of the output")
            logsumexp = _logsumexp(allowed)
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
            if self.is_end(token) or (stop and _hits_stop(self, steps, stop)):
                finish = "stop"
                break
            if len(steps) < max_tokens and len(prompt_tokens) + len(steps) < self.settings.n_ctx:
                logits = self._advance(token)
        finished = time.perf_counter()
        timings = Timings(
            prompt_ms=(prompt_done - started) * 1000,
            decode_ms=(finished - prompt_done) * 1000,
            generated_tokens=len(steps),
        )
        self.stats.calls += 1
        self.stats.generated_tokens += len(steps)
        self.stats.decode_seconds += finished - prompt_done
        return steps, finish, timings

    def score(
        self,
        prompt_tokens: Sequence[int],
        tokens: Sequence[int],
        *,
        top_k: int,
        grammar: str | None,
    ) -> list[ScoredStep]:
        """Teacher forcing on the generation path: how this runtime rates each given token."""
        with self._lock:
            mask = _GrammarMask(self._vocab, grammar, self.n_vocab) if grammar else None
            try:
                scored: list[ScoredStep] = []
                logits = self._start(prompt_tokens)
                for index, token in enumerate(tokens):
                    allowed = logits if mask is None else mask.mask(logits)
                    logsumexp = _logsumexp(allowed)
                    best = int(allowed.argmax())
                    scored.append(
                        ScoredStep(
                            index=index,
                            golden=TokenLogprob(
                                token, self.piece(token), float(allowed[token]) - logsumexp
                            ),
                            best=TokenLogprob(
                                best, self.piece(best), float(allowed[best]) - logsumexp
                            ),
                            top=self._top(allowed, logsumexp, top_k),
                        )
                    )
                    if not math.isfinite(allowed[token]):
                        break  # the grammar forbids the golden token: nothing later is comparable
                    if mask is not None:
                        mask.accept(token)
                    if index + 1 < len(tokens):
                        logits = self._advance(token)
                return scored
            finally:
                if mask:
                    mask.close()

    def continuation_logprob(
        self, prompt_tokens: Sequence[int], continuation: Sequence[int]
    ) -> float:
        """Sum of the logprobs of ``continuation`` after the prompt, on the incremental path."""
        with self._lock:
            logits = self._start(prompt_tokens)
            total = 0.0
            for index, token in enumerate(continuation):
                total += float(logits[token]) - _logsumexp(logits)
                if index + 1 < len(continuation):
                    logits = self._advance(token)
            return total

    def embed(self, text: str) -> list[float]:
        if not self.embedding:
            raise EngineError(
                f"model {self.name!r} is not declared as an embedding model: "
                "add `embedding = true` to its spec in [tool.smallmodel.models]"
            )
        with self._lock:
            self._llama.reset()
            vector = self._llama.embed(text, normalize=False, truncate=False)
            self._llama.reset()
        if vector and isinstance(vector[0], list):  # per-token embeddings: no pooling in the model
            raise EngineError(
                f"model {self.name!r} returns per-token embeddings (its GGUF sets no pooling): "
                "set pooling = 'mean' (or 'cls', 'last') in its settings"
            )
        return [float(x) for x in vector]

    def close(self) -> None:
        llama = getattr(self, "_llama", None)
        if llama is not None:
            llama.close()
            self._llama = None


def _hits_stop(model: LoadedModel, steps: Sequence[Step], stop: Sequence[str]) -> bool:
    text = model.detokenize([s.token for s in steps])
    return any(s in text for s in stop)


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text


@dataclass
class ModelPool:
    """This process's loaded models, one per (sha256, load settings, embedding)."""

    _models: dict[tuple[Any, ...], LoadedModel] = field(default_factory=dict)

    def get(
        self, *, name: str, path: Path, sha256: str, settings: EngineSettings, embedding: bool
    ) -> LoadedModel:
        key = (sha256, settings.load_key(), embedding)
        model = self._models.get(key)
        if model is None:
            model = LoadedModel(
                name=name, path=path, sha256=sha256, settings=settings, embedding=embedding
            )
            self._models[key] = model
        return model

    def __iter__(self) -> Iterator[LoadedModel]:
        return iter(list(self._models.values()))

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()


class ModelHandle:
    """What a test gets from the ``model`` fixture."""

    def __init__(
        self, model: LoadedModel, settings: EngineSettings, cache: ResultCache | None = None
    ) -> None:
        self._model = model
        self.settings = settings
        self._cache = cache
        if cache is not None:
            cache.check_backend(model.fingerprint)
        self.name = model.name
        self.sha256 = model.sha256

    def __repr__(self) -> str:
        return f"<ModelHandle {self.name}@{self.sha256[:8]}>"

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        return self._model.fingerprint

    # -- prompts ------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        _check_text("tokenize", text)
        return self._model.tokenize(text, add_bos=True, special=False)

    def detokenize(self, ids: Sequence[int]) -> str:
        # llama.cpp indexes its vocabulary with these ids unchecked: check them here.
        n_vocab = self._model.n_vocab
        if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
            raise EngineError(f"detokenize() takes a list of token ids, got {type(ids).__name__}")
        tokens = list(ids)
        bad = [
            token
            for token in tokens
            if isinstance(token, bool)
            or not isinstance(token, numbers.Integral)
            or not 0 <= int(token) < n_vocab
        ]
        if bad:
            raise EngineError(
                f"detokenize(): {bad[0]!r} is not a token id of model {self.name!r} "
                f"(ids are integers from 0 to {n_vocab - 1})"
            )
        return self._model.detokenize([int(token) for token in tokens])

    def render_chat(self, messages: Messages) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._model.chat_template
        if template is None:
            raise EngineError(
                f"model {self.name!r} has no chat template in its GGUF "
                "(tokenizer.chat_template): use generate() with a plain prompt"
            )
        if not isinstance(messages, Sequence):
            raise EngineError(
                "expected a prompt string or a list of chat messages, got "
                f"{type(messages).__name__}"
            )
        if not messages:
            raise EngineError("chat() needs at least one message")
        for index, message in enumerate(messages):
            if (
                not isinstance(message, Mapping)
                or "role" not in message
                or "content" not in message
            ):
                raise EngineError(
                    f"chat message {index} must be a mapping with 'role' and 'content', "
                    f"got {message!r}"
                )
        llama = self._model._llama
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._model.piece(llama.token_eos()),
            bos_token=self._model.piece(llama.token_bos()),
            add_generation_prompt=True,
        )
        rendered = formatter(messages=[dict(m) for m in messages])  # type: ignore[misc]
        return str(rendered.prompt)

    def _prompt(
        self, prompt_or_messages: PromptOrMessages
    ) -> tuple[str, list[int], Messages | None]:
        if isinstance(prompt_or_messages, str):
            return prompt_or_messages, self.tokenize(prompt_or_messages), None
        rendered = self.render_chat(prompt_or_messages)
        bos = self._model.piece(self._model._llama.token_bos())
        # The template writes special tokens as text; add BOS only if it did not write one.
        add_bos = bool(self._model._llama._model.add_bos_token()) and not (
            bos and rendered.startswith(bos)
        )
        tokens = self._model.tokenize(rendered, add_bos=add_bos, special=True)
        return rendered, tokens, prompt_or_messages

    def _provenance(self, request: Request) -> Provenance:
        return Provenance(
            model=self.name,
            sha256=self.sha256,
            request=request,
            fingerprint=self._model.fingerprint,
            scorer=self._score,
        )

    def _score(self, request: Request, tokens: Sequence[int]) -> list[ScoredStep]:
        grammar = _schema_grammar(request.schema) if request.schema is not None else None
        return self._model.score(
            request.prompt_tokens, tokens, top_k=self.settings.top_logprobs, grammar=grammar
        )

    # -- requests -----------------------------------------------------------------------------

    def _run(
        self,
        kind: str,
        prompt_or_messages: PromptOrMessages,
        *,
        max_tokens: int,
        stop: str | Sequence[str] | None,
        schema: Mapping[str, Any] | None = None,
    ) -> Generation:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
            raise EngineError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        stops = _check_stop(stop)
        prompt, tokens, messages = self._prompt(prompt_or_messages)
        request = Request(
            kind=kind,  # type: ignore[arg-type]
            prompt=prompt,
            prompt_tokens=tuple(tokens),
            settings=self.settings.numeric(),
            max_tokens=max_tokens,
            stop=stops,
            messages=tuple(dict(m) for m in messages) if messages is not None else None,
            schema=schema,
        )
        key = self._cache_key(request)

        def from_cache(payload: dict[str, Any]) -> Generation:
            steps = _steps_from_json(payload["steps"])
            if payload["finish_reason"] not in ("stop", "length"):
                raise ValueError(payload["finish_reason"])
            return Generation(
                str(payload["text"]),
                tokens=[step.token for step in steps],
                steps=steps,
                finish_reason=payload["finish_reason"],
                timings=Timings(0.0, 0.0, len(steps)),
                provenance=self._provenance(request),
                cached=True,
            )

        cached = self._cached(key, from_cache)
        if cached is not None:
            return cached
        grammar = _schema_grammar(schema) if schema is not None else None
        steps, finish, timings = self._model.decode(
            tokens,
            max_tokens=max_tokens,
            stop=stops,
            top_k=self.settings.top_logprobs,
            grammar=grammar,
        )
        ids = [s.token for s in steps]
        text_ids = ids[:-1] if finish == "stop" and ids and self._model.is_end(ids[-1]) else ids
        text = _cut_at_stop(self._model.detokenize(text_ids), stops)
        self._store(
            key, {"text": text, "finish_reason": finish, "steps": [_step_to_json(s) for s in steps]}
        )
        return Generation(
            text,
            tokens=ids,
            steps=steps,
            finish_reason=finish,
            timings=timings,
            provenance=self._provenance(request),
        )

    # -- result cache ---------------------------------------------------------------------------

    def _cache_key(self, request: Request) -> str | None:
        if self._cache is None:
            return None
        return cache_key(
            request=request.as_record(),
            fingerprint=self._model.fingerprint,
            top_logprobs=self.settings.top_logprobs,
        )

    def _cached(self, key: str | None, parse: Callable[[dict[str, Any]], _T]) -> _T | None:
        """The cached result for ``key``; an entry that does not parse is ignored (recomputed)."""
        if key is None or self._cache is None:
            return None
        payload = self._cache.get(key)
        if payload is None:
            return None
        try:
            result = parse(payload)
        except (KeyError, TypeError, ValueError):
            return None
        self._model.stats.calls += 1
        self._model.stats.cached_calls += 1
        return result

    def _store(self, key: str | None, payload: Mapping[str, Any]) -> None:
        if key is not None and self._cache is not None:
            self._cache.put(key, payload)

    def generate(
        self, prompt: str, *, max_tokens: int, stop: str | Sequence[str] | None = None
    ) -> Generation:
        if not isinstance(prompt, str):
            raise EngineError(f"generate() takes a prompt string, got {type(prompt).__name__}")
        return self._run("generate", prompt, max_tokens=max_tokens, stop=stop)

    def chat(
        self, messages: Messages, *, max_tokens: int, stop: str | Sequence[str] | None = None
    ) -> Generation:
        if isinstance(messages, str):
            raise EngineError("chat() takes a list of messages; use generate() for a plain prompt")
        return self._run("chat", messages, max_tokens=max_tokens, stop=stop)

    def extract(
        self, prompt_or_messages: PromptOrMessages, schema: Mapping[str, Any], *, max_tokens: int
    ) -> Extraction:
        _check_schema(schema)
        generation = self._run(
            "extract", prompt_or_messages, max_tokens=max_tokens, stop=None, schema=schema
        )
        try:
            value = json.loads(generation.text)
        except json.JSONDecodeError as error:
            raise ExtractionError(
                f"model {self.name!r} produced output that is not JSON ({error}; "
                f"finish_reason={generation.finish_reason}, raise max_tokens if 'length'):\n"
                f"{generation.text}"
            ) from None
        validator = jsonschema.Draft202012Validator(dict(schema))
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            details = "\n".join(
                f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in errors
            )
            raise ExtractionError(
                f"model {self.name!r} produced JSON that does not match the schema:\n"
                f"{generation.text}\n{details}"
            )
        result: Extraction
        if isinstance(value, dict):
            result = ExtractedDict(value)
        elif isinstance(value, list):
            result = ExtractedList(value)
        else:
            raise ExtractionError(
                f"extract() needs a schema whose root is an object or array; got {generation.text}"
            )
        result.generation = generation
        return result

    def classify(self, prompt_or_messages: PromptOrMessages, labels: Sequence[str]) -> Label:
        if isinstance(labels, str) or not labels:
            raise EngineError("classify() needs a non-empty list of labels, e.g. ['yes', 'no']")
        labels = tuple(labels)
        if len(set(labels)) != len(labels) or any(not isinstance(x, str) or not x for x in labels):
            raise EngineError(f"labels must be distinct non-empty strings, got {list(labels)!r}")
        prompt, tokens, messages = self._prompt(prompt_or_messages)
        label_tokens = {
            label: self._model.tokenize(label, add_bos=False, special=False) for label in labels
        }
        # Scoring a label evaluates the prompt and then the label: all of it must fit the context.
        for label, ids in label_tokens.items():
            if len(tokens) + len(ids) > self.settings.n_ctx:
                raise EngineError(
                    f"the prompt ({len(tokens)} tokens) plus the label {label!r} ({len(ids)} "
                    f"tokens) is {len(tokens) + len(ids)} tokens but the context is "
                    f"n_ctx={self.settings.n_ctx}: shorten the prompt or raise n_ctx "
                    "(in [tool.smallmodel.settings], the model's spec, or the marker)"
                )
        request = Request(
            kind="classify",
            prompt=prompt,
            prompt_tokens=tuple(tokens),
            settings=self.settings.numeric(),
            messages=tuple(dict(m) for m in messages) if messages is not None else None,
            labels=labels,
        )
        key = self._cache_key(request)

        def from_cache(payload: dict[str, Any]) -> Label:
            logprobs = {str(k): float(v) for k, v in payload["logprobs"].items()}
            if payload["label"] not in labels or set(logprobs) != set(labels):
                raise ValueError("labels differ")
            return Label(payload["label"], logprobs=logprobs, provenance=self._provenance(request))

        cached = self._cached(key, from_cache)
        if cached is not None:
            return cached
        logprobs = {
            label: self._model.continuation_logprob(tokens, label_tokens[label]) for label in labels
        }
        self._model.stats.calls += 1  # scoring generates no tokens: it stays out of tokens/s
        # max() keeps the first of equal scores: the order the test gave wins a tie.
        chosen = max(labels, key=lambda label: logprobs[label])
        self._store(key, {"label": chosen, "logprobs": logprobs})
        return Label(chosen, logprobs=logprobs, provenance=self._provenance(request))

    def embed(self, text: str) -> Embedding:
        _check_text("embed", text)
        tokens = self.tokenize(text)
        # An embedding evaluates the whole text in one batch (llama-cpp-python refuses more than
        # n_batch; encoder models abort the process beyond n_ubatch), within the context.
        limits = {
            "n_ctx": self.settings.n_ctx,
            "n_batch": self.settings.n_batch,
            "n_ubatch": self.settings.n_ubatch,
        }
        setting = min(limits, key=lambda name: limits[name])
        if len(tokens) > limits[setting]:
            raise EngineError(
                f"the text to embed is {len(tokens)} tokens but the model takes at most "
                f"{limits[setting]} at once ({setting}={limits[setting]}): shorten the text or "
                "raise n_ctx, n_batch and n_ubatch (in [tool.smallmodel.settings], the model's "
                "spec, or the marker)"
            )
        request = Request(
            kind="embed",
            prompt=text,
            prompt_tokens=tuple(tokens),
            settings={**self.settings.numeric(), "pooling": self.settings.pooling},
        )
        key = self._cache_key(request)
        cached = self._cached(key, lambda payload: [float(x) for x in payload["vector"]])
        if cached is not None:
            vector = Embedding(cached)
        else:
            vector = Embedding(self._model.embed(text))
            self._model.stats.calls += 1
            self._store(key, {"vector": list(vector)})
        vector.provenance = self._provenance(request)
        return vector


def _check_text(method: str, text: object) -> None:
    if not isinstance(text, str):
        raise EngineError(f"{method}() takes a string, got {type(text).__name__}")


def _check_stop(stop: object) -> tuple[str, ...]:
    """``stop`` as a tuple of non-empty strings, or one message saying what is wrong with it."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, list | tuple) or not all(isinstance(s, str) for s in stops):
        raise EngineError(
            f"stop must be a string or a list of strings, got {stop!r}: for example stop=['\\n']"
        )
    if any(not s for s in stops):
        # An empty string is found in every text: decoding would stop after the first token.
        raise EngineError(
            f"stop={stop!r} contains an empty string, which matches at once: remove it"
        )
    return tuple(stops)


def _step_to_json(step: Step) -> list[Any]:
    return [step.token, step.text, step.logprob, [[t.token, t.text, t.logprob] for t in step.top]]


def _steps_from_json(raw: Sequence[Sequence[Any]]) -> list[Step]:
    return [
        Step(
            int(token),
            str(text),
            float(logprob),
            tuple(TokenLogprob(int(t), str(p), float(lp)) for t, p, lp in top),
        )
        for token, text, logprob, top in raw
    ]


def _check_schema(schema: Mapping[str, Any]) -> None:
    if not isinstance(schema, Mapping):
        raise EngineError(
            f"the schema must be a JSON Schema object (dict), got {type(schema).__name__}"
        )
    try:
        jsonschema.Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as error:
        path = "/".join(map(str, error.absolute_path)) or "(root)"
        raise EngineError(f"invalid JSON Schema at {path}: {error.message}") from None


def _schema_grammar(schema: Mapping[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(dict(schema))))
    except Exception as error:  # the converter raises bare Exceptions for unsupported keywords
        raise EngineError(f"cannot build a grammar from the JSON Schema: {error}") from None
