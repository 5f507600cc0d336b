"""How an extraction is judged: as the generation it is (the generation kind it is handed, as
``drift.kinds`` registers it), its evidence adding the changed fields and what breaks the
request's JSON schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_smallmodel.common.results import ExtractedDict
from pytest_smallmodel.drift.kinds.base import KindDefaults
from pytest_smallmodel.drift.text import structured_lines

if TYPE_CHECKING:
    from pytest_smallmodel.common.results import Generation
    from pytest_smallmodel.drift.kinds.base import Check, Describe, Replayer
    from pytest_smallmodel.drift.kinds.generation import GenerationKind
    from pytest_smallmodel.drift.verdict import Verdict
    from pytest_smallmodel.goldens.records import GoldenRecord


class ExtractionKind(KindDefaults):
    kind = "extraction"
    requests = ("extract",)

    def __init__(self, generation: GenerationKind) -> None:
        self._generation = generation

    def compare(self, check: Check) -> Verdict:
        return self._generation.compare(check)

    def forced_result(self, generation: Generation) -> object | None:
        extracted = ExtractedDict()
        extracted.generation = generation
        return extracted

    def headline(self, verdict: Verdict) -> str:
        return self._generation.headline(verdict)

    def evidence(self, verdict: Verdict, describe: Describe) -> list[str]:
        golden, current = verdict.golden, verdict.current
        assert golden is not None and current is not None
        return [*self._generation.evidence(verdict, describe), *structured_lines(golden, current)]

    def summary(self, record: GoldenRecord) -> list[str]:
        return self._generation.summary(record)

    def diff(self, golden: GoldenRecord, current: GoldenRecord) -> list[str]:
        return self._generation.diff(golden, current)

    def replay(self, model: Replayer, record: GoldenRecord) -> object:
        request = record.request or {}
        return model.extract(
            record.prompt_source, request["schema"], max_tokens=request["max_tokens"]
        )
