"""An ``extract`` result: a generation constrained to a JSON schema, stored as its generation.

Everything a generation's golden holds, read and checked by the generation kind it is handed
(``goldens.kinds`` registers it so), plus one check: the text parses as JSON (the fields a test
asserts on are that text parsed).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.results import ExtractedDict, ExtractedList

if TYPE_CHECKING:
    from pytest_smallmodel.goldens.document import GoldenFiles
    from pytest_smallmodel.goldens.kinds.generation import GenerationFormat
    from pytest_smallmodel.goldens.records import GoldenRecord


class ExtractionFormat:
    kind = "extraction"
    model_result = True
    stores = (ExtractedDict, ExtractedList)

    def __init__(self, generation: GenerationFormat) -> None:
        self._generation = generation

    def record(self, value: ExtractedDict | ExtractedList) -> GoldenRecord:
        return self._generation.record_of_generation(value.generation, kind=self.kind)

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        return self._generation.output(record, files)

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        return self._generation.fields(record)

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        return dataclasses.replace(self._generation.read(data, common, files), kind=self.kind)

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        problem = self._generation.consistency_problem(record)
        if problem is not None:
            return problem
        try:
            json.loads(record.text or "")
        except json.JSONDecodeError as error:
            return (
                f"field 'text' of an extraction is not JSON ({error.msg} at column "
                f"{error.colno}): an extraction's fields are its text parsed"
            )
        return None
