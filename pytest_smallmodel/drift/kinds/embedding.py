"""How an embedding is judged: the same vector passes; in tolerance mode a vector of the same
dimensions passes at a cosine similarity of at least ``embedding_min_cosine``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pytest_smallmodel.drift.kinds.base import KindDefaults
from pytest_smallmodel.drift.text import OUTPUT_DIFF, unified
from pytest_smallmodel.drift.verdict import EmbeddingScores, Mode, Reason, Verdict
from pytest_smallmodel.goldens.records import GoldenRecord

if TYPE_CHECKING:
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer


class EmbeddingKind(KindDefaults):
    kind = "embedding"
    requests = ("embed",)

    def compare(self, check: Check) -> Verdict:
        old = check.golden.vector or ()
        new = check.current.vector or ()
        if old == new:
            return check.identical()
        min_cosine = check.min_cosine
        if len(old) != len(new):
            scores = EmbeddingScores(len(old), len(new), None, None, min_cosine)
            return check.decide(
                check.not_tolerated(), False, Reason.DIMENSIONS_CHANGED, embedding=scores
            )
        similarity = cosine_similarity(old, new)
        max_abs = max((abs(a - b) for a, b in zip(old, new, strict=True)), default=0.0)
        scores = EmbeddingScores(len(old), len(new), similarity, max_abs, min_cosine)
        return check.judge(similarity >= min_cosine, Reason.EMBEDDING_DIFFERS, embedding=scores)

    def headline(self, verdict: Verdict) -> str:
        scores = verdict.embedding
        assert scores is not None
        if verdict.reason is Reason.DIMENSIONS_CHANGED:
            return (
                f"embedding dimension changed from {scores.golden_dimensions} to "
                f"{scores.dimensions}"
            )
        if verdict.reason is Reason.EMBEDDING_DIFFERS:
            return "embedding differs from the golden " + (
                "(strict mode)" if verdict.mode is Mode.STRICT else "under the same fingerprint"
            )
        comparison = ">=" if verdict.reason is Reason.WITHIN_TOLERANCE else "<"
        prefix = (
            "passed within tolerance"
            if verdict.reason is Reason.WITHIN_TOLERANCE
            else "drift beyond tolerance"
        )
        return f"{prefix}: cosine similarity {scores.cosine:.6f} {comparison} {scores.min_cosine:g}"

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        scores = verdict.embedding
        assert scores is not None
        if scores.cosine is None or scores.max_abs_difference is None:
            return []
        return [
            f"cosine similarity {scores.cosine:.6f} (threshold {scores.min_cosine:g}); "
            f"max absolute difference {scores.max_abs_difference:.6g} over "
            f"{scores.dimensions} dimensions"
        ]

    def summary(self, record: GoldenRecord) -> list[str]:
        return [f"embedding of {len(record.vector or ())} dimensions"]

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return [OUTPUT_DIFF, *unified(self.summary(golden), self.summary(current))]

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        return model.embed(str((record.request or {})["prompt"]))


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm > 0 else (1.0 if list(a) == list(b) else 0.0)


KIND = EmbeddingKind()
