"""An ``embed`` result: the vector, with its number of dimensions written beside it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_smallmodel.common.results import Embedding
from pytest_smallmodel.goldens.document import DocumentProblem, GoldenFiles, Inline
from pytest_smallmodel.goldens.records import GoldenRecord, provenance_fields


class EmbeddingFormat:
    kind = "embedding"
    model_result = True
    stores = (Embedding,)

    def record(self, value: Embedding) -> GoldenRecord:
        return GoldenRecord(
            kind=self.kind,
            vector=tuple(float(x) for x in value),
            **provenance_fields(value.provenance),
        )

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        return {}  # a vector is no reading matter: it goes after the request

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        return {
            "dimensions": len(record.vector or ()),
            "vector": Inline(list(record.vector or ())),
        }

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        vector = tuple(float(x) for x in data["vector"])
        if data["dimensions"] != len(vector):
            raise DocumentProblem(f"'dimensions' does not match the vector's length {len(vector)}")
        return GoldenRecord(kind=self.kind, vector=vector, **common)

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        return None


FORMAT = EmbeddingFormat()
