"""Any other plain value a test asserted (numbers, lists, dicts of those): stored as JSON.

Last in the registry: it takes whatever no other kind holds, and refuses what JSON cannot keep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_smallmodel.goldens.document import GoldenFiles
from pytest_smallmodel.goldens.records import GoldenRecord, check_plain, json_normal


class ValueFormat:
    kind = "value"
    model_result = False
    stores = (object,)  # last: whatever no other kind stores

    def record(self, value: Any) -> GoldenRecord:
        check_plain(value)
        return GoldenRecord(kind=self.kind, value=json_normal(value))

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        return {"value": record.value}

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        return {}

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        return GoldenRecord(kind=self.kind, value=data["value"])

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        return None


FORMAT = ValueFormat()
