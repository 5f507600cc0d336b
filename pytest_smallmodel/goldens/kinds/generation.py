"""A ``generate`` or ``chat`` result: its text, token ids, finish reason and decoding steps.

Comparisons read the token ids; a reviewer reads the text and the step texts, so the golden must
be one a model could have written: every token id has one piece, and the text is what
detokenizing the pieces gives (``consistency_problem``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_smallmodel.common.results import Generation, Step, TokenLogprob, cut_at_stop
from pytest_smallmodel.goldens.document import (
    DocumentProblem,
    GoldenFiles,
    Inline,
    joined,
    lines,
    number,
    quoted,
    step_for_file,
)
from pytest_smallmodel.goldens.records import GoldenRecord, provenance_fields, round_logprob

# A token's piece as the engine writes it: undecodable bytes of a split character as \xNN.
_BYTE_ESCAPE_RE = re.compile(r"\\x([0-9a-f]{2})")
# Control tokens (<|im_end|>, </s>) have a piece but no text: detokenizing leaves them out.
_CONTROL_PIECE_RE = re.compile(r"^<[^<>\s]+>$")


class GenerationFormat:
    kind = "generation"
    model_result = True
    stores = (Generation,)

    def record(self, value: Generation) -> GoldenRecord:
        return self.record_of_generation(value, kind=self.kind)

    def record_of_generation(self, generation: Generation, *, kind: str) -> GoldenRecord:
        return GoldenRecord(
            kind=kind,
            text=generation.text,
            tokens=tuple(generation.tokens),
            finish_reason=generation.finish_reason,
            steps=tuple(_rounded_step(step) for step in generation.steps),
            **provenance_fields(generation.provenance),
        )

    def output(self, record: GoldenRecord, files: GoldenFiles) -> dict[str, Any]:
        return {"text": lines(record.text or "")}

    def fields(self, record: GoldenRecord) -> dict[str, Any]:
        return {
            "finish_reason": record.finish_reason,
            "tokens": Inline(list(record.tokens)),
            "steps": [step_for_file(step) for step in record.steps],
        }

    def read(
        self, data: Mapping[str, Any], common: Mapping[str, Any], files: GoldenFiles
    ) -> GoldenRecord:
        tokens = tuple(data["tokens"])
        steps = tuple(step_of(step) for step in data["steps"])
        if [s.token for s in steps] != list(tokens):
            raise DocumentProblem("'tokens' and the tokens of 'steps' disagree")
        return GoldenRecord(
            kind=self.kind,
            text=joined(data["text"]),
            tokens=tokens,
            finish_reason=data["finish_reason"],
            steps=steps,
            **common,
        )

    def consistency_problem(self, record: GoldenRecord) -> str | None:
        return _pieces_problem(record) or _text_problem(record)


def _rounded_step(step: Step) -> Step:
    return Step(
        step.token,
        step.text,
        round_logprob(step.logprob),
        tuple(TokenLogprob(t.token, t.text, round_logprob(t.logprob)) for t in step.top),
    )


def step_of(data: Mapping[str, Any]) -> Step:
    return Step(
        data["token"],
        data["text"],
        number(data["logprob"]),
        tuple(TokenLogprob(token, text, number(logprob)) for token, text, logprob in data["top"]),
    )


def _pieces_problem(record: GoldenRecord) -> str | None:
    seen: dict[int, tuple[str, str]] = {}
    for index, step in enumerate(record.steps):
        named = [(step.token, step.text, f"steps[{index}].text")]
        named += [(t.token, t.text, f"steps[{index}].top[{j}]") for j, t in enumerate(step.top)]
        for token, text, where in named:
            first = seen.setdefault(token, (text, where))
            if first[0] != text:
                return (
                    f"token {token} reads {text!r} in {where} but {first[0]!r} in {first[1]}: "
                    "a token id has one text"
                )
    return None


def _text_problem(record: GoldenRecord) -> str | None:
    candidates = _text_candidates(record, (record.request or {}).get("stop") or ())
    if (record.text or "") in candidates:
        return None
    shown = candidates[-1] if record.finish_reason == "stop" else candidates[0]
    return (
        f"field 'text' is {quoted(record.text or '')} but its tokens read {quoted(shown)} "
        "(the text of 'steps'): the text was edited apart from the tokens"
    )


def _text_candidates(record: GoldenRecord, stop: Sequence[str]) -> list[str]:
    """The texts the engine can have made of these steps: it leaves out a final end token, and
    control tokens elsewhere; it decodes the bytes of split characters together."""
    pieces = [step.text for step in record.steps]
    ends = [False, True] if record.finish_reason == "stop" and pieces else [False]
    found: list[str] = []
    for drop_end in ends:
        kept = pieces[:-1] if drop_end else pieces
        for without_control in (False, True):
            chosen = [p for p in kept if not (without_control and _CONTROL_PIECE_RE.match(p))]
            joined_pieces = "".join(chosen)
            for text in (joined_pieces, _decode_escapes(joined_pieces)):
                cut = cut_at_stop(text, stop)
                if cut not in found:
                    found.append(cut)
    return found


def _decode_escapes(text: str) -> str:
    def byte(match: re.Match[str]) -> str:
        value = int(match.group(1), 16)
        # backslashreplace escapes only bytes that are not UTF-8 alone (0x80 and up); a lower
        # one is text that happens to look like an escape.
        return chr(0xDC00 + value) if value >= 0x80 else match.group(0)

    raw = _BYTE_ESCAPE_RE.sub(byte, text)
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


FORMAT = GenerationFormat()
