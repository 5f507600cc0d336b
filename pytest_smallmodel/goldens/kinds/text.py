"""A plain ``str`` a test asserted (not a model result): stored as lines, compared for equality."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_smallmodel.goldens.document import GoldenFiles, joined, lines
from pytest_smallmodel.goldens.records import GoldenRecord


class TextFormat:
    kind = "text"
    model_result = False
    stores = (str,)  # after the model results: a Generation and a Label are strings too

    def record(self, value: str) -> GoldenRecord:
        return GoldenRecord(kind=self.kind, text=str.__str__(value))

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        return {"text": lines(record.text or "")}

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        return {}

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        return GoldenRecord(kind=self.kind, text=joined(data["text"]))

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        return None


FORMAT = TextFormat()
