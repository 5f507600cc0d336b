"""The engine as a test sees it: ``ModelHandle`` over a loaded ``Backend``.

Each loaded model runs in an engine worker process (``worker.py``, ``runtime.py``), so a crash
of llama.cpp fails one test and says why instead of ending the session. Determinism rules live
with the runtime (``runtime.py``, docs/determinism.md).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import wraps
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.results import (
    BatchedCheck,
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
    cut_at_stop,
)
from pytest_smallmodel.common.settings import EngineSettings
from pytest_smallmodel.engine.backend import Backend, Decoding, Forcing
from pytest_smallmodel.engine.result_cache import (
    ResultCache,
    StoredGeneration,
    StoredLabel,
    cache_key,
    lookup_record,
    stored_request,
    stored_vector,
    vector_payload,
    with_request,
)
from pytest_smallmodel.goldens.records import GoldenRecord

if TYPE_CHECKING:  # the plugin hands the handle its goldens (drift/batched.py)
    from pytest_smallmodel.drift.batched import GoldenSource
    from pytest_smallmodel.evaluation.cases import Case
    from pytest_smallmodel.evaluation.report import EvaluationReport
    from pytest_smallmodel.evaluation.run import CaseSource

Messages = Sequence[Mapping[str, Any]]
_T = TypeVar("_T")
PromptOrMessages = str | Messages


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _recorded(
    method: Callable[Concatenate[ModelHandle, _P], _R],
) -> Callable[Concatenate[ModelHandle, _P], _R]:
    """A model call that ``evaluate`` notes for the case being run: an evaluation golden stores
    the case's request and result so that drift and ``smallmodel compare`` can replay it."""

    @wraps(method)
    def call(self: ModelHandle, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        result = method(self, *args, **kwargs)
        if self._calls is not None:
            self._calls.append(result)
        return result

    return cast("Callable[Concatenate[ModelHandle, _P], _R]", call)


class ExtractionError(EngineError):
    """Constrained decoding produced something that is not valid against the schema."""


class ModelHandle:
    """What a test gets from the ``model`` fixture."""

    def __init__(
        self,
        model: Backend,
        settings: EngineSettings,
        cache: ResultCache | None = None,
        *,
        goldens: GoldenSource | None = None,
    ) -> None:
        self._model = model
        self.settings = settings
        self._cache = cache
        # The running test's goldens (the plugin passes them when the test uses ``golden`` and
        # verifies batched): in tolerance mode a golden is checked with one batched pass before
        # anything is decoded.
        self.goldens = goldens
        self._calls: list[object] | None = None  # while evaluate runs a case's task
        if cache is not None:
            cache.check_backend(model.fingerprint)
        self.name = model.name
        self.sha256 = model.sha256

    def __repr__(self) -> str:
        return f"<ModelHandle {self.name}@{self.sha256[:8]}>"

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        return self._model.fingerprint

    @property
    def worker_pid(self) -> int | None:
        """The process id of the engine worker running this model (None between a crash and
        the next call, which starts a fresh worker, and, with the result cache, until the first
        call that the cache cannot answer)."""
        return self._model.pid

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
        _check_messages(messages)
        return self._model.render_chat(messages)

    def _prompt(
        self, prompt_or_messages: PromptOrMessages
    ) -> tuple[str, list[int], Messages | None]:
        if isinstance(prompt_or_messages, str):
            return prompt_or_messages, self.tokenize(prompt_or_messages), None
        rendered = self.render_chat(prompt_or_messages)
        info = self._model.info
        # The template writes special tokens as text; add BOS only if it did not write one.
        add_bos = info.add_bos and not (info.bos_text and rendered.startswith(info.bos_text))
        tokens = self._model.tokenize(rendered, add_bos=add_bos, special=True)
        return rendered, tokens, prompt_or_messages

    def _provenance(self, request: Request) -> Provenance:
        return Provenance(
            model=self.name,
            sha256=self.sha256,
            request=request,
            fingerprint=self._model.fingerprint,
            scorer=self._score if self._model.capabilities.teacher_forcing else None,
        )

    def _score(self, request: Request, tokens: Sequence[int]) -> list[ScoredStep]:
        forcing = Forcing(tuple(tokens), self.settings.top_logprobs, request.schema)
        return self._model.score(request.prompt_tokens, forcing, timeout=self.settings.timeout)

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
        messages = _source_messages(prompt_or_messages)
        # The request as the test made it; tokens (and a chat's rendered prompt) come from the
        # result cache's entry or, on a miss, from the model.
        source = Request(
            kind=kind,  # type: ignore[arg-type]
            prompt=prompt_or_messages if isinstance(prompt_or_messages, str) else "",
            prompt_tokens=(),
            settings=self.settings.numeric(),
            max_tokens=max_tokens,
            stop=stops,
            messages=messages,
            schema=schema,
        )
        key = self._cache_key(source)

        def from_cache(payload: dict[str, Any]) -> Generation:
            request = self._stored_request(source, payload, prompt_or_messages)
            stored = StoredGeneration.from_payload(payload)
            return Generation(
                stored.text,
                tokens=[step.token for step in stored.steps],
                steps=stored.steps,
                finish_reason=stored.finish_reason,
                timings=Timings(0.0, 0.0, len(stored.steps)),
                provenance=self._provenance(request),
                cached=True,
            )

        cached = self._cached(key, from_cache)
        if cached is not None:
            return cached
        prompt, tokens, _ = self._prompt(prompt_or_messages)
        request = replace(source, prompt=prompt, prompt_tokens=tuple(tokens))
        verification = self._tolerance_check(request)
        check = verification[0] if verification is not None else None
        if verification is not None and verification[0].passed:
            return self._verified(request, *verification, stops=stops)
        decoding = Decoding(max_tokens, tuple(stops), self.settings.top_logprobs, schema)
        steps, finish, timings = self._model.decode(tokens, decoding, timeout=self.settings.timeout)
        ids = [s.token for s in steps]
        text = self._text(ids, finish, stops)
        self._store(key, request, StoredGeneration(text, finish, steps).payload())
        return Generation(
            text,
            tokens=ids,
            steps=steps,
            finish_reason=finish,
            timings=timings,
            provenance=self._provenance(request),
            batched=check,
        )

    def _text(self, ids: Sequence[int], finish: str, stops: Sequence[str]) -> str:
        ends = finish == "stop" and bool(ids) and self._model.is_end(ids[-1])
        text_ids = list(ids[:-1]) if ends else list(ids)
        return cut_at_stop(self._model.detokenize(text_ids), stops)

    def _tolerance_check(
        self, request: Request
    ) -> tuple[BatchedCheck, list[ScoredStep], GoldenRecord] | None:
        """Tolerance mode only: the batched teacher-forced check of the golden this request will
        be compared with, or None when no golden applies (exact mode, strict, no golden)."""
        if self.goldens is None or not self._model.capabilities.teacher_forcing:
            return None
        found = self.goldens.candidate(
            model=self.name, sha256=self.sha256, request=request, fingerprint=self.fingerprint
        )
        if found is None:
            return None
        path, golden = found
        if len(request.prompt_tokens) + len(golden.tokens) > self.settings.n_ctx:
            return None  # cannot be this run's output; decoding reports why
        forcing = Forcing(tuple(golden.tokens), self.settings.top_logprobs, request.schema)
        scored = self._model.verify(request.prompt_tokens, forcing, timeout=self.settings.timeout)
        check = self.goldens.judge(
            scored,
            golden.tokens,
            tolerance=self.goldens.policy.tolerance_for(self.name),
            path=path,
            incremental=not self._model.capabilities.batched_verify,
        )
        return check, scored, golden

    def _verified(
        self,
        request: Request,
        check: BatchedCheck,
        scored: Sequence[ScoredStep],
        golden: GoldenRecord,
        *,
        stops: Sequence[str],
    ) -> Generation:
        """The golden's tokens as this run's result, rated by the batched pass (no decoding)."""
        steps = [Step(s.golden.token, s.golden.text, s.golden.logprob, s.top) for s in scored]
        ids = list(check.tokens)
        finish: FinishReason = "stop" if golden.finish_reason == "stop" else "length"
        self._model.stats.calls += 1
        self._model.stats.verified_calls += 1
        return Generation(
            self._text(ids, finish, stops),
            tokens=ids,
            steps=steps,
            finish_reason=finish,
            timings=Timings(0.0, 0.0, 0),
            provenance=self._provenance(request),
            batched=check,
        )

    # -- result cache ---------------------------------------------------------------------------

    def _cache_key(self, source: Request) -> str | None:
        """The result cache's key for a request as the test made it (no tokenizing needed)."""
        if self._cache is None:
            return None
        return cache_key(
            request=lookup_record(source),
            fingerprint=self._model.fingerprint,
            top_logprobs=self.settings.top_logprobs,
            chat_template=self._model.chat_template,
            embedding=self._model.embedding,
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

    def _store(self, key: str | None, request: Request, payload: Mapping[str, Any]) -> None:
        if key is not None and self._cache is not None:
            # A chat template that calls strftime_now renders another prompt on another day:
            # such an entry is served only after rendering the messages again (see below).
            dated = request.messages is not None and "strftime_now" in (
                self._model.info.chat_template or ""
            )
            self._cache.put(key, with_request(payload, request, dated=dated))

    def _stored_request(
        self, source: Request, payload: Mapping[str, Any], prompt_or_messages: PromptOrMessages
    ) -> Request:
        """The request of a cache entry; an entry whose prompt depends on the date counts only
        if the template renders the same prompt today (which needs the worker's vocabulary)."""
        request = stored_request(source, payload)
        if payload.get("dated"):
            prompt, tokens, _ = self._prompt(prompt_or_messages)
            if prompt != request.prompt or tuple(tokens) != request.prompt_tokens:
                raise ValueError("the chat template renders another prompt today")
        return request

    @_recorded
    def generate(
        self, prompt: str, *, max_tokens: int, stop: str | Sequence[str] | None = None
    ) -> Generation:
        if not isinstance(prompt, str):
            raise EngineError(f"generate() takes a prompt string, got {type(prompt).__name__}")
        return self._run("generate", prompt, max_tokens=max_tokens, stop=stop)

    @_recorded
    def chat(
        self, messages: Messages, *, max_tokens: int, stop: str | Sequence[str] | None = None
    ) -> Generation:
        if isinstance(messages, str):
            raise EngineError("chat() takes a list of messages; use generate() for a plain prompt")
        return self._run("chat", messages, max_tokens=max_tokens, stop=stop)

    @_recorded
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
        import jsonschema  # imported on use: most sessions never extract

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

    @_recorded
    def classify(self, prompt_or_messages: PromptOrMessages, labels: Sequence[str]) -> Label:
        if isinstance(labels, str) or not labels:
            raise EngineError("classify() needs a non-empty list of labels, e.g. ['yes', 'no']")
        labels = tuple(labels)
        if len(set(labels)) != len(labels) or any(not isinstance(x, str) or not x for x in labels):
            raise EngineError(f"labels must be distinct non-empty strings, got {list(labels)!r}")
        source = Request(
            kind="classify",
            prompt=prompt_or_messages if isinstance(prompt_or_messages, str) else "",
            prompt_tokens=(),
            settings=self.settings.numeric(),
            messages=_source_messages(prompt_or_messages),
            labels=labels,
        )
        key = self._cache_key(source)

        def from_cache(payload: dict[str, Any]) -> Label:
            request = self._stored_request(source, payload, prompt_or_messages)
            stored = StoredLabel.from_payload(payload, labels)
            return Label(
                stored.label, logprobs=stored.logprobs, provenance=self._provenance(request)
            )

        cached = self._cached(key, from_cache)
        if cached is not None:
            return cached
        prompt, tokens, _ = self._prompt(prompt_or_messages)
        request = replace(source, prompt=prompt, prompt_tokens=tuple(tokens))
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
        # One prompt evaluation for all labels: each label is scored from a saved copy of the
        # prompt's state, with the numbers label_logprob gives (tests/drift/test_batched.py).
        scores = self._model.label_logprobs(
            tokens, [label_tokens[label] for label in labels], timeout=self.settings.timeout
        )
        logprobs = dict(zip(labels, scores, strict=True))
        self._model.stats.calls += 1  # scoring generates no tokens: it stays out of tokens/s
        # max() keeps the first of equal scores: the order the test gave wins a tie.
        chosen = max(labels, key=lambda label: logprobs[label])
        self._store(key, request, StoredLabel(chosen, logprobs).payload())
        return Label(chosen, logprobs=logprobs, provenance=self._provenance(request))

    def evaluate(
        self,
        cases: CaseSource,
        task: Callable[[ModelHandle, Case], Any],
        *,
        labels: Sequence[str] | None = None,
    ) -> EvaluationReport:
        """Run ``task(model, case)`` on every case (a dataset path, or a list of rows or
        ``Case`` objects) and score each output against the case's expected value.

        The report holds accuracy and, where cases expect them, per-label and per-field metrics,
        each with its 95 % Wilson interval, the wrong cases, and latency per case measured after
        one warm-up call (a result from the result cache is "not measured"). ``labels``, when
        given, are checked against every expected label before anything runs."""
        # Imported here: a session that evaluates nothing (most, and every cached rerun) does
        # not pay for loading the evaluation modules.
        from pytest_smallmodel.evaluation.run import as_cases, run_cases
        from pytest_smallmodel.evaluation.stats import EvaluationError

        listed = as_cases(cases)
        if labels is not None:
            for case in listed:
                expected = getattr(case.expected, "label", None)
                if expected is not None and expected not in labels:
                    raise EvaluationError(
                        f"case {case.id!r} ({case.where}): its expected label {expected!r} is "
                        f"not among the labels {', '.join(map(repr, labels))}"
                    )
        stats = self._model.stats

        def warm_up(case: Case) -> None:
            cache, self._cache = self._cache, None
            try:
                task(self, case)
            finally:
                self._cache = cache

        def run(case: Case) -> Any:
            self._calls = []
            try:
                return task(self, case)
            finally:
                made.append(self._calls[-1] if self._calls else None)
                self._calls = None

        made: list[object] = []
        return run_cases(
            listed,
            run,
            last_call=lambda: made[-1] if made else None,
            cached_calls=lambda: stats.cached_calls,
            labels=labels,
            warm_up=warm_up,
        )

    @_recorded
    def embed(self, text: str) -> Embedding:
        _check_text("embed", text)
        source = Request(
            kind="embed",
            prompt=text,
            prompt_tokens=(),
            settings={**self.settings.numeric(), "pooling": self.settings.pooling},
        )
        key = self._cache_key(source)

        def from_cache(payload: dict[str, Any]) -> Embedding:
            vector = Embedding(stored_vector(payload))
            vector.provenance = self._provenance(stored_request(source, payload))
            return vector

        cached = self._cached(key, from_cache)
        if cached is not None:
            return cached
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
        request = replace(source, prompt_tokens=tuple(tokens))
        vector = Embedding(self._model.embed(text, timeout=self.settings.timeout))
        self._model.stats.calls += 1
        self._store(key, request, vector_payload(vector))
        vector.provenance = self._provenance(request)
        return vector


def _source_messages(prompt_or_messages: PromptOrMessages) -> tuple[dict[str, Any], ...] | None:
    """The chat messages of a request (checked), or None for a prompt string."""
    if isinstance(prompt_or_messages, str):
        return None
    _check_messages(prompt_or_messages)
    return tuple(dict(m) for m in prompt_or_messages)


def _check_messages(messages: object) -> None:
    if not isinstance(messages, Sequence):
        raise EngineError(
            f"expected a prompt string or a list of chat messages, got {type(messages).__name__}"
        )
    if not messages:
        raise EngineError("chat() needs at least one message")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise EngineError(
                f"chat message {index} must be a mapping with 'role' and 'content', got {message!r}"
            )


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


def _check_schema(schema: Mapping[str, Any]) -> None:
    if not isinstance(schema, Mapping):
        raise EngineError(
            f"the schema must be a JSON Schema object (dict), got {type(schema).__name__}"
        )
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as error:
        path = "/".join(map(str, error.absolute_path)) or "(root)"
        raise EngineError(f"invalid JSON Schema at {path}: {error.message}") from None
