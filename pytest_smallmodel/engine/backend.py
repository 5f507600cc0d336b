"""The seam between a test's ``ModelHandle`` and whatever runs the model.

A backend loads one pinned file with one set of settings and answers at the level of tokens:
tokenize, render a chat, decode greedily, teacher-force given tokens (``score``), score a
continuation, embed. ``ModelHandle`` (``handle.py``) builds requests, results, goldens and the
result cache on top and never sees the runtime behind it. The llama-cpp-python engine worker
(``worker/parent.py`` over ``worker/runtime.py``) is the first implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_smallmodel.common.results import FinishReason, RepackDecision, ScoredStep, Step, Timings

if TYPE_CHECKING:
    from pytest_smallmodel.common.settings import EngineSettings, LoadSpec


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond decoding; what it cannot is named in reports, never
    replaced by a weaker check (docs/backends.md)."""

    teacher_forcing: bool = True  # score / verify / classify: rate given tokens
    batched_verify: bool = True  # verify in one batched pass (else incremental, still exact)
    limitations: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """What the pytest process knows about a loaded model, sent once after loading."""

    n_vocab: int
    bos_text: str
    eos_text: str
    add_bos: bool
    chat_template: str | None
    fingerprint: Mapping[str, Any]
    repack: RepackDecision


@dataclass
class ModelStats:
    """Per-model figures for the terminal summary."""

    load_seconds: float = 0.0
    worker_starts: int = 0  # none when every result of the session came from the result cache
    worker_start_seconds: float = 0.0
    calls: int = 0
    cached_calls: int = 0
    generated_tokens: int = 0
    decode_seconds: float = 0.0
    crashes: int = 0
    verified_calls: int = 0  # answered by the batched teacher-forced check, nothing decoded
    weights_loaded: bool = False
    identity_unverified: bool = False  # served by a running server that cannot prove its file

    def count_decode(self, timings: Timings) -> None:
        """One decoding call: its tokens and time go into the summary's tokens/s."""
        self.calls += 1
        self.generated_tokens += timings.generated_tokens
        self.decode_seconds += timings.decode_ms / 1000

    def add(self, other: ModelStats) -> None:
        """Sum another process's figures into these (xdist workers); a flag is set if any is."""
        for item in fields(ModelStats):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            merged = (mine or theirs) if isinstance(mine, bool) else mine + theirs
            setattr(self, item.name, merged)


@dataclass(frozen=True)
class Decoding:
    """One greedy generation: at most ``max_tokens``, ending early at an end token or one of
    ``stop``; ``top_k`` alternatives kept per step; ``schema`` (JSON Schema) restricts choices."""

    max_tokens: int
    stop: tuple[str, ...] = ()
    top_k: int = 0
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Forcing:
    """Teacher forcing: ``tokens`` fed after the prompt, each rated against the model's best
    (``top_k`` alternatives kept per step; ``schema`` restricts choices as when decoding)."""

    tokens: tuple[int, ...]
    top_k: int
    schema: Mapping[str, Any] | None = None


class Backend(Protocol):
    """One loaded model. Calls are serialised by the backend; ``timeout`` bounds each one."""

    spec: LoadSpec
    name: str
    path: Path
    sha256: str
    settings: EngineSettings
    embedding: bool
    chat_template: str | None  # the template text named in the model's spec; None: the GGUF's
    stats: ModelStats
    capabilities: Capabilities

    @property
    def info(self) -> ModelInfo: ...

    @property
    def fingerprint(self) -> Mapping[str, Any]: ...

    @property
    def n_vocab(self) -> int: ...

    @property
    def pid(self) -> int | None: ...

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def is_end(self, token: int) -> bool: ...

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str: ...

    def decode(
        self, prompt_tokens: Sequence[int], decoding: Decoding, *, timeout: float | None = None
    ) -> tuple[list[Step], FinishReason, Timings]: ...

    def score(
        self, prompt_tokens: Sequence[int], forcing: Forcing, *, timeout: float | None = None
    ) -> list[ScoredStep]: ...

    def verify(
        self, prompt_tokens: Sequence[int], forcing: Forcing, *, timeout: float | None = None
    ) -> list[ScoredStep]:
        """Like ``score`` but in one batched pass: sound for tolerance mode only. A backend
        without one (``Capabilities.batched_verify``, named in the report) keeps this: the
        incremental pass of ``score``, exact."""
        return self.score(prompt_tokens, forcing, timeout=timeout)

    def label_logprobs(
        self,
        prompt_tokens: Sequence[int],
        continuations: Sequence[Sequence[int]],
        *,
        timeout: float | None = None,
    ) -> list[float]:
        """Each continuation's total logprob after the prompt, evaluated once. A backend that
        keeps no prompt state between calls keeps this: each label on its own
        (``label_logprob``)."""
        return [
            self.label_logprob(prompt_tokens, continuation, timeout=timeout)
            for continuation in continuations
        ]

    def label_logprob(
        self, prompt_tokens: Sequence[int], label: Sequence[int], timeout: float | None = None
    ) -> float:
        """One label's total logprob after the prompt, from a fresh context."""
        ...

    def weights_loaded(self) -> bool: ...

    def embed(self, text: str, *, timeout: float | None = None) -> list[float]: ...

    def close(self) -> None: ...


class Loaded(Backend):
    """What every backend keeps of the model it loaded: its identity, spelled out for the
    callers that read one field, and its figures for the summary."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.path = spec.path
        self.sha256 = spec.sha256
        self.settings = spec.settings
        self.embedding = spec.embedding
        self.chat_template = spec.chat_template
        self.stats = ModelStats()
