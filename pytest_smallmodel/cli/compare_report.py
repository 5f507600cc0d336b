"""What ``smallmodel compare`` found, as data: one ``CaseResult`` per golden, the suite's
``Figures`` and the ``CompareReport`` that ``compare_render`` renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Divergence:
    """The first step where OLD's and NEW's tokens differ (``None`` tokens: that run ended)."""

    step: int
    old_token: str | None
    new_token: str | None
    old_margin: float | None  # golden run: OLD's token over NEW's token (stored top-k)
    new_margin: float | None  # this run: NEW's token over OLD's token (NEW's top-k)


@dataclass(frozen=True)
class CaseResult:
    golden: str
    kind: str
    identical: bool
    rerendered: bool = False
    error: str | None = None
    corrupt: bool = False  # the golden does not follow from its tokens: ``error`` says where
    old_text: str = ""
    new_text: str = ""
    divergence: Divergence | None = None
    step_gaps: tuple[float, ...] = ()
    old_steps: tuple[tuple[str, float], ...] = ()
    new_steps: tuple[tuple[str, float], ...] = ()
    old_label: str | None = None
    new_label: str | None = None
    old_label_logprobs: Mapping[str, float] | None = None
    new_label_logprobs: Mapping[str, float] | None = None
    fields_total: int = 0
    fields_agreeing: int = 0
    fields_changed: tuple[str, ...] = ()
    cosine: float | None = None
    generated_tokens: int = 0
    decode_seconds: float = 0.0


@dataclass(frozen=True)
class Figures:
    cases: int
    identical: int
    errors: int
    labels: int
    labels_agreeing: int
    fields: int
    fields_agreeing: int
    extraction_cases: int
    divergence_steps: int
    divergence_mean: float | None
    divergence_max: float | None
    rerendered: int
    embeddings: int
    embedding_cosine_min: float | None
    new_tokens_per_second: float | None
    new_load_seconds: float
    new_peak_rss_mib: float

    @property
    def identical_share(self) -> float:
        return self.identical / self.cases if self.cases else 0.0


@dataclass
class CompareReport:
    old: str
    new: str
    new_sha256: str
    cases: list[CaseResult]
    figures: Figures
    skipped: list[str] = field(default_factory=list)
    pending_written: list[str] = field(default_factory=list)

    @property
    def unusable(self) -> list[str]:
        """Goldens that could not be read or do not follow from their tokens: the comparison
        cannot vouch for them, so it fails (exit 1) after reporting."""
        return [*self.skipped, *(case.error or "" for case in self.cases if case.corrupt)]
