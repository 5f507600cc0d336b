"""Replaying goldens' stored requests under benign runtime variants: what ``smallmodel
calibrate`` and ``--smallmodel-triage`` measure (``drift/calibration.py`` decides from it).

A *benign* variant keeps the request the same in meaning and changes only how the numbers are
computed: the thread count, the batch sizes, flash attention, repacking of the weights, the
batched teacher-forced pass against incremental evaluation, llama-server instead of
llama-cpp-python. Each golden's tokens are teacher-forced under each variant (the gap of every
golden token to the variant's best token, its top-1 margins, the KL over the stored top-k), and
its greedy output is decoded once per loaded model to see whether it stayed identical.

Variants that change only how a loaded model is asked (batched pass or incremental) share one
load; every other variant loads the model once for all the goldens it measures, and is closed
before the next one loads. The batched pass is the default path: it is what tolerance mode
checks a golden with first (docs/drift.md), so its noise belongs in the calibration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.errors import SmallModelError
from pytest_smallmodel.common.fingerprint import IMPLICIT_SETTINGS
from pytest_smallmodel.common.results import RepackDecision, ScoredStep
from pytest_smallmodel.common.settings import SETTING_NAMES, EngineSettings, LoadSpec
from pytest_smallmodel.drift.calibration import Measurement, Triage, TriageLabel, triage
from pytest_smallmodel.drift.topk import step_agreement
from pytest_smallmodel.drift.triage import needs_triage, run_gap
from pytest_smallmodel.engine.backend import Backend, Decoding, Forcing
from pytest_smallmodel.goldens.records import GoldenRecord
from pytest_smallmodel.pins.project import Serving

if TYPE_CHECKING:  # the pool is handed in by the command or the session
    from pytest_smallmodel.drift.verdict import Verdict
    from pytest_smallmodel.engine.pool import ModelPool

BATCHED = "batched pass"
INCREMENTAL = "incremental decoding"
SMALL_BATCHES = 8  # n_batch = n_ubatch: the prompt in many small micro-batches
THREADS = 2  # the baseline's thread count; the thread variant runs with one
MAX_LOADS = 6  # as recorded, threads, small batches, flash attention, repacking, llama-server


@dataclass(frozen=True)
class Load:
    """One way to load the model, and the variants measured on it (the path each takes)."""

    name: str
    what: str  # what differs from the golden's recorded settings, for the report
    overrides: Callable[[EngineSettings], Mapping[str, Any]]
    paths: tuple[tuple[str, bool], ...]  # (variant name, batched?)
    serving: Serving = field(default_factory=Serving)
    # False where logprobs are reported before a schema's grammar masks them (llama-server):
    # an extraction's gaps would rate tokens the grammar forbids.
    grammar_logprobs: bool = True


@dataclass(frozen=True)
class Unavailable:
    variant: str
    why: str

    def describe(self) -> str:
        return f"{self.variant}: {self.why}"


def _flip_flash(settings: EngineSettings) -> Mapping[str, Any]:
    return {"flash_attn": not settings.flash_attn}


def matrix(*, server_missing: str | None) -> tuple[list[Load], list[str]]:
    """The loads of the benign matrix but repacking (``repack_load``: its flip depends on what
    the first load did), and the variants left out here (``name: why``). ``server_missing``:
    why llama-server cannot run here, None when it can."""
    loads = [
        Load(
            "as recorded",
            "the golden's settings",
            lambda s: {},
            ((BATCHED, True), (INCREMENTAL, False)),
        ),
        Load(
            "threads=1",
            f"one thread instead of {THREADS}",
            lambda s: {"n_threads": 1},
            (("threads=1", True),),
        ),
        Load(
            f"n_batch=n_ubatch={SMALL_BATCHES}",
            f"the prompt in micro-batches of {SMALL_BATCHES} tokens",
            lambda s: {"n_batch": SMALL_BATCHES, "n_ubatch": SMALL_BATCHES},
            ((f"n_batch=n_ubatch={SMALL_BATCHES}", True),),
        ),
        Load(
            "flash attention flipped",
            "flash attention on where it was recorded off, off where on",
            _flip_flash,
            (("flash attention flipped", True),),
        ),
    ]
    missing: list[str] = []
    if server_missing is None:
        loads.append(
            Load(
                "llama-server",
                "llama.cpp's llama-server (managed), teacher-forced incrementally",
                lambda s: {},
                (("llama-server", False),),
                Serving(backend="llama-server"),
                grammar_logprobs=False,
            )
        )
    else:
        missing.append(f"llama-server: {server_missing}")
    return loads, missing


def repack_load(decision: RepackDecision) -> Load | str:
    """The repacking flip of what this build and CPU do by default, or why it cannot run."""
    if not decision.enabled and decision.reason.startswith("auto"):
        return f"repack=on: {decision.reason}"  # AMX kernels crash with repacking on
    name = "repack=off" if decision.enabled else "repack=on"
    return Load(
        name,
        "weights not repacked" if decision.enabled else "weights repacked",
        lambda s: {"repack": not decision.enabled},
        ((name, True),),
    )


def recorded_settings(record: GoldenRecord, *, top_k: int) -> EngineSettings:
    """The engine settings a golden's request recorded (settings added later: as they were)."""
    stored = {**IMPLICIT_SETTINGS, **dict((record.request or {}).get("settings") or {})}
    known = {k: v for k, v in stored.items() if k in SETTING_NAMES}
    return replace(EngineSettings(**known), n_threads=THREADS, top_logprobs=top_k)


def top_k_of(record: GoldenRecord) -> int:
    return max((len(step.top) for step in record.steps), default=5) or 5


def server_problem() -> str | None:
    """Why llama-server cannot run here (None: its binary is installed)."""
    from pytest_smallmodel.engine.served.process import find_binary

    try:
        find_binary()
    except SmallModelError as error:
        return str(error).split("\n")[0]
    return None


@dataclass
class VariantReplayer:
    """Replays goldens of one model file (``base``: name, path, sha256, template) under the
    matrix. ``progress`` is called once per golden measured on a load."""

    base: LoadSpec
    # Where the loads come from (the caller's, so that this module starts no backend itself).
    pool: ModelPool
    progress: Callable[[], None] | None = None
    server: bool = True
    # Keeps every load open for later replays (triage replays one failing golden at a time);
    # False: each load is closed once its goldens are measured.
    keep_loads: bool = False
    # The loads to replay under instead of the benign matrix (a benchmark's baseline).
    only: Sequence[Load] | None = None
    unavailable: list[Unavailable] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    repack: RepackDecision | None = None  # what the first load did

    def _unavailable(self, variant: str, why: str) -> None:
        if all(u.variant != variant for u in self.unavailable):
            self.unavailable.append(Unavailable(variant, why))

    def replay(self, goldens: Sequence[tuple[str, GoldenRecord]]) -> list[Measurement]:
        """Every golden under every load of the matrix; a load that fails is named once."""
        measurements: list[Measurement] = []
        groups: dict[EngineSettings, list[tuple[str, GoldenRecord]]] = {}
        for path, record in goldens:
            settings = recorded_settings(record, top_k=top_k_of(record))
            groups.setdefault(settings, []).append((path, record))
        if self.only is not None:
            loads, missing = list(self.only), list[str]()
        else:
            loads, missing = matrix(
                server_missing=server_problem() if self.server else "not asked for"
            )
        for line in missing:
            name, _, why = line.partition(": ")
            self._unavailable(name, why)
        pending = list(loads)
        while pending:
            load = pending.pop(0)
            for settings, members in groups.items():
                measurements += self._on_load(load, settings, members)
            if load is loads[0] and self.only is None:  # it told what repacking does here
                flip = repack_load(self.repack) if self.repack is not None else None
                if isinstance(flip, Load):
                    pending.insert(0, flip)
                elif isinstance(flip, str):
                    name, _, why = flip.partition(": ")
                    self._unavailable(name, why)
        return measurements

    def _on_load(
        self, load: Load, settings: EngineSettings, members: Sequence[tuple[str, GoldenRecord]]
    ) -> list[Measurement]:
        spec = replace(self.base, settings=replace(settings, **load.overrides(settings)))
        try:
            backend = self.pool.get(spec, serving=load.serving)
        except SmallModelError as error:
            self._unavailable(load.name, _first_line(error))
            self._advance(len(members))
            return []
        found: list[Measurement] = []
        try:
            if self.repack is None and load.serving.backend == "llama-cpp-python":
                self.repack = backend.info.repack
            for path, record in members:
                found += measure(
                    backend, path, record, load.paths, grammar_logprobs=load.grammar_logprobs
                )
                self._advance(1)
        except SmallModelError as error:  # the backend died mid-way: the variant is unusable
            self._unavailable(load.name, _first_line(error))
        finally:
            if not self.keep_loads:
                self.pool.release(spec, serving=load.serving)
        for name, _ in load.paths:
            if name not in self.ran and any(m.variant == name and m.error is None for m in found):
                self.ran.append(name)
        return found

    def _advance(self, count: int) -> None:
        if self.progress is not None:
            for _ in range(count):
                self.progress()


def measure(
    backend: Backend,
    path: str,
    record: GoldenRecord,
    paths: Sequence[tuple[str, bool]],
    *,
    grammar_logprobs: bool = True,
) -> list[Measurement]:
    """One golden on one loaded model, once per (variant, batched?) path."""
    if record.kind == "label":
        return [label_measurement(backend, path, record, paths[0][0])]
    if record.kind not in ("generation", "extraction") or not record.tokens:
        return []
    request = record.request or {}
    if request.get("schema") is not None and not grammar_logprobs:
        why = "its logprobs are reported before the schema's grammar: extractions not measured"
        return [Measurement(path, name, error=why) for name, _ in paths]
    prompt = list(request.get("prompt_tokens") or [])
    if len(prompt) + len(record.tokens) > backend.settings.n_ctx:
        return [
            Measurement(path, name, error="prompt and golden tokens exceed n_ctx")
            for name, _ in paths
        ]
    identical = greedy_identical(backend, record)
    found = []
    for name, batched in paths:
        forcing = Forcing(tuple(record.tokens), top_k_of(record), request.get("schema"))
        scored = (backend.verify if batched else backend.score)(prompt, forcing)
        found.append(forced_measurement(path, name, record, scored, identical))
    return found


def forced_measurement(
    path: str,
    variant: str,
    record: GoldenRecord,
    scored: Sequence[ScoredStep],
    identical: bool | None,
) -> Measurement:
    """A teacher-forced replay as a measurement: gaps, margins and KL at the golden's contexts."""
    if len(scored) < len(record.tokens):
        return Measurement(
            path,
            variant,
            error=f"teacher forcing stopped at step {len(scored)} (grammar or context)",
        )
    gaps = tuple(step.gap for step in scored)
    worst = max(range(len(gaps)), key=lambda i: gaps[i]) if gaps else None
    margins = [s.top[0].logprob - s.top[1].logprob for s in scored if len(s.top) >= 2]
    kls = [
        agreement.kl
        for step, forced in zip(record.steps, scored, strict=False)
        if (agreement := step_agreement(forced.index, step.top, forced.top)) is not None
        and agreement.kl is not None
    ]
    return Measurement(
        golden=path,
        variant=variant,
        gaps=gaps,
        worst_step=scored[worst].index if worst is not None else None,
        min_margin=min(margins, default=None),
        identical=identical,
        mean_kl=math.fsum(kls) / len(kls) if kls else None,
        max_kl=max(kls, default=None),
    )


def greedy_identical(backend: Backend, record: GoldenRecord) -> bool:
    """Whether this load decodes the golden's request to the golden's tokens."""
    request = record.request or {}
    decoding = Decoding(
        max_tokens=int(request.get("max_tokens") or len(record.tokens)),
        stop=tuple(request.get("stop") or ()),
        top_k=1,
        schema=request.get("schema"),
    )
    steps, _, _ = backend.decode(list(request.get("prompt_tokens") or []), decoding)
    return tuple(step.token for step in steps) == tuple(record.tokens)


def label_measurement(
    backend: Backend, path: str, record: GoldenRecord, variant: str
) -> Measurement:
    """A label golden: the golden label's gap to this load's best label, and the margin."""
    request = record.request or {}
    labels = [str(label) for label in request.get("labels") or []]
    if not labels or record.label not in labels:
        return Measurement(path, variant, error="the golden names no label among its labels")
    prompt = list(request.get("prompt_tokens") or [])
    continuations = [backend.tokenize(label, add_bos=False, special=False) for label in labels]
    scores = dict(zip(labels, backend.label_logprobs(prompt, continuations), strict=True))
    best = max(labels, key=lambda label: scores[label])  # the first of equals, as classify
    ranked = sorted(scores.values(), reverse=True)
    return Measurement(
        golden=path,
        variant=variant,
        gaps=(scores[best] - scores[record.label],),
        min_margin=ranked[0] - ranked[1] if len(ranked) > 1 else None,
        identical=best == record.label,
    )


def _first_line(error: BaseException) -> str:
    return str(error).strip().split("\n")[0]


class Triager:
    """``--smallmodel-triage``: labels the session's failing verdicts numerical or behavioural
    by replaying each on the pinned file under the benign matrix (``drift/triage`` says which
    verdicts qualify). The loads stay open in one pool for the session, so a second failing
    golden of the same model costs its replays only; ``close`` ends them."""

    def __init__(
        self, base_spec: Callable[[str], LoadSpec], pool: ModelPool, *, server: bool = True
    ) -> None:
        self.base_spec = base_spec  # the registry's: a model name -> its pinned file's spec
        self.server = server
        self.pool = pool

    def __call__(self, verdict: Verdict) -> Verdict:
        if not needs_triage(verdict):
            return verdict
        golden = verdict.golden
        assert golden is not None and golden.model is not None
        gap, step = run_gap(verdict)
        try:
            spec = self.base_spec(golden.model)
        except SmallModelError as error:
            why = f"the pinned file cannot be loaded here: {str(error).splitlines()[0]}"
            return replace(
                verdict, triage=Triage(TriageLabel.UNDECIDED, None, gap, step, (), (why,))
            )
        replayer = VariantReplayer(spec, self.pool, server=self.server, keep_loads=True)
        measurements = replayer.replay([(verdict.golden_path, golden)])
        unavailable = [u.describe() for u in replayer.unavailable]
        return replace(verdict, triage=triage(gap, step, measurements, unavailable=unavailable))

    def close(self) -> None:
        self.pool.close()


__all__ = [
    "BATCHED",
    "INCREMENTAL",
    "Load",
    "Triager",
    "Unavailable",
    "VariantReplayer",
    "forced_measurement",
    "greedy_identical",
    "label_measurement",
    "matrix",
    "measure",
    "recorded_settings",
    "repack_load",
    "server_problem",
]
