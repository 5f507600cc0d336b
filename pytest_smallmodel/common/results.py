"""What the engine returns: plain data that also behaves like the value a test asserts on.

A ``Generation`` *is* its text (a ``str`` subclass), a ``Label`` *is* the chosen label, an
extraction *is* the parsed ``dict``/``list`` and an ``Embedding`` *is* its ``list[float]``; each
also carries the request it answered and the fingerprint it was made under, so goldens can record
and explain them. None of these import llama_cpp: goldens and drift reports work on them alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

RequestKind = Literal["generate", "chat", "extract", "classify", "embed"]
FinishReason = Literal["stop", "length"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first of the ``stop`` strings it contains (a generation's text ends
    before its stop string)."""
    positions = [text.find(s) for s in stop if isinstance(s, str) and s and s in text]
    return text[: min(positions)] if positions else text


@dataclass(frozen=True)
class RepackDecision:
    """Whether weights are repacked into llama.cpp's extra buffer types (AMX, REPACK), and why."""

    enabled: bool
    reason: str


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    text: str
    logprob: float


@dataclass(frozen=True)
class Step:
    """One decoding step: the chosen token and the top-k alternatives (full-vocab logprobs)."""

    token: int
    text: str
    logprob: float
    top: tuple[TokenLogprob, ...]

    @property
    def margin(self) -> float:
        """Logprob gap between the best and second-best token (how close this step was to a tie)."""
        if len(self.top) < 2:
            return float("inf")
        return self.top[0].logprob - self.top[1].logprob


@dataclass(frozen=True)
class Request:
    """Everything about the input that determines the output, apart from the model and runtime.

    ``settings`` holds only the settings that can change numbers (never thread counts).
    """

    kind: RequestKind
    prompt: str
    prompt_tokens: tuple[int, ...]
    settings: Mapping[str, Any]
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    messages: tuple[Mapping[str, Any], ...] | None = None
    schema: Mapping[str, Any] | None = None
    labels: tuple[str, ...] | None = None

    def as_record(self) -> dict[str, Any]:
        """JSON-ready form, keys in a fixed order (goldens, cache keys and diffs use it)."""
        record: dict[str, Any] = {"kind": self.kind}
        if self.messages is not None:
            record["messages"] = [dict(m) for m in self.messages]
        record["prompt"] = self.prompt
        record["prompt_tokens"] = list(self.prompt_tokens)
        record["settings"] = dict(sorted(self.settings.items()))
        if self.max_tokens is not None:
            record["max_tokens"] = self.max_tokens
        if self.stop:
            record["stop"] = list(self.stop)
        if self.schema is not None:
            record["schema"] = self.schema
        if self.labels is not None:
            record["labels"] = list(self.labels)
        return record


@dataclass(frozen=True)
class Timings:
    prompt_ms: float
    decode_ms: float
    generated_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / (self.decode_ms / 1000) if self.decode_ms > 0 else 0.0


@dataclass(frozen=True)
class ScoredStep:
    """A teacher-forced step: how this runtime rates the golden token against its own best."""

    index: int
    golden: TokenLogprob
    best: TokenLogprob
    top: tuple[TokenLogprob, ...]

    @property
    def gap(self) -> float:
        """Nats by which the golden token trails the best token here; 0 when it is the best."""
        return self.best.logprob - self.golden.logprob


@dataclass(frozen=True)
class BatchedCheck:
    """What one batched teacher-forced pass found for a golden's tokens (tolerance mode only).

    ``passed``: every golden token stayed within ``tolerance`` nats of this runtime's best token,
    so the engine returned the golden's tokens without decoding. Otherwise the engine decoded
    incrementally and the drift report is built from that decode, as without this pass.
    """

    golden_path: str
    tokens: tuple[int, ...]
    passed: bool
    tolerance: float
    steps_checked: int
    max_gap: float
    worst_step: int
    problem: str | None = None
    # True where the backend has no batched pass (llama-server): the same check, made on the
    # incremental path in one teacher-forced request.
    incremental: bool = False

    def describe(self) -> str:
        summary = (
            f"{self.steps_checked} of {len(self.tokens)} golden tokens checked, max gap "
            f"{self.max_gap:.4f} nats at step {self.worst_step}, tolerance {self.tolerance:.2f}"
        )
        return f"{summary}; {self.problem}" if self.problem else summary


# Re-scores a golden token sequence for the same request on the live model (teacher forcing).
Scorer = Callable[[Request, Sequence[int]], list[ScoredStep]]


@dataclass(frozen=True)
class Provenance:
    """Who made a result: model identity, the request, and the environment fingerprint."""

    model: str
    sha256: str
    request: Request
    fingerprint: Mapping[str, Any]
    scorer: Scorer | None = field(default=None, compare=False, repr=False)


class Generation(str):
    """Generated text that also carries tokens, per-step logprobs, timings and provenance."""

    tokens: tuple[int, ...]
    steps: tuple[Step, ...]
    finish_reason: FinishReason
    timings: Timings
    provenance: Provenance
    cached: bool
    batched: BatchedCheck | None

    def __new__(
        cls,
        text: str,
        *,
        tokens: Sequence[int],
        steps: Sequence[Step],
        finish_reason: FinishReason,
        timings: Timings,
        provenance: Provenance,
        cached: bool = False,
        batched: BatchedCheck | None = None,
    ) -> Generation:
        self = super().__new__(cls, text)
        self.tokens = tuple(tokens)
        self.steps = tuple(steps)
        self.finish_reason = finish_reason
        self.timings = timings
        self.provenance = provenance
        self.cached = cached
        self.batched = batched
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)

    @property
    def prompt(self) -> str:
        """The prompt as the model saw it (for chat: the rendered template)."""
        return self.provenance.request.prompt

    @property
    def prompt_tokens(self) -> tuple[int, ...]:
        return self.provenance.request.prompt_tokens

    @property
    def top_logprobs(self) -> list[list[TokenLogprob]]:
        return [list(step.top) for step in self.steps]

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        return self.provenance.fingerprint

    def __repr__(self) -> str:
        return f"Generation({self.text!r}, tokens={len(self.tokens)}, finish={self.finish_reason})"

    # str subclasses pickle through __reduce__ with the text only; keep the extra state.
    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_generation,
            (
                self.text,
                self.tokens,
                self.steps,
                self.finish_reason,
                self.timings,
                _portable(self.provenance),
                self.cached,
                self.batched,
            ),
        )


def _rebuild_generation(
    text: str,
    tokens: tuple[int, ...],
    steps: tuple[Step, ...],
    finish_reason: FinishReason,
    timings: Timings,
    provenance: Provenance,
    cached: bool,
    batched: BatchedCheck | None = None,
) -> Generation:
    return Generation(
        text,
        tokens=tokens,
        steps=steps,
        finish_reason=finish_reason,
        timings=timings,
        provenance=provenance,
        cached=cached,
        batched=batched,
    )


def _portable(provenance: Provenance) -> Provenance:
    """Drop the live scorer (a bound method on a loaded model) so results can cross processes."""
    return Provenance(
        provenance.model, provenance.sha256, provenance.request, provenance.fingerprint
    )


class Label(str):
    """The chosen label; carries the total logprob the model gives every label."""

    logprobs: Mapping[str, float]
    provenance: Provenance

    def __new__(cls, label: str, *, logprobs: Mapping[str, float], provenance: Provenance) -> Label:
        self = super().__new__(cls, label)
        self.logprobs = dict(logprobs)
        self.provenance = provenance
        return self

    @property
    def label(self) -> str:
        return str.__str__(self)

    @property
    def fingerprint(self) -> Mapping[str, Any]:
        return self.provenance.fingerprint

    def __repr__(self) -> str:
        return f"Label({self.label!r}, logprobs={dict(self.logprobs)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_label, (self.label, dict(self.logprobs), _portable(self.provenance)))


def _rebuild_label(label: str, logprobs: dict[str, float], provenance: Provenance) -> Label:
    return Label(label, logprobs=logprobs, provenance=provenance)


class ExtractedDict(dict[str, Any]):
    """A JSON object produced by schema-constrained decoding; ``generation`` is the raw decode."""

    generation: Generation


class ExtractedList(list[Any]):
    """A JSON array produced by schema-constrained decoding; ``generation`` is the raw decode."""

    generation: Generation


Extraction = ExtractedDict | ExtractedList


class Embedding(list[float]):
    """An embedding vector with the provenance it was computed under."""

    provenance: Provenance


def generation_of(value: object) -> Generation | None:
    """The generation behind a live result, if it has one (extractions keep theirs)."""
    if isinstance(value, ExtractedDict | ExtractedList):
        return value.generation
    if isinstance(value, Generation):
        return value
    return None
