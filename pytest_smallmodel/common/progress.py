"""A progress bar for long runs (an evaluation over many cases, a compare over a golden
directory, a calibration's replays): drawn on a terminal, as ``smallmodel pull`` draws one, and
never in CI logs or when stderr is not a terminal (a captured pytest run, a pipe)."""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterable, Sized
from typing import TypeVar

_T = TypeVar("_T")
# Fewer items finish before a bar would be read.
MIN_ITEMS = 2


def progress_shown() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(items: Iterable[_T], *, what: str) -> Generator[_T, None, None]:
    """``items``, with a bar on stderr counting ``what`` while a terminal shows it (closing the
    generator before its end closes the bar)."""
    total = len(items) if isinstance(items, Sized) else None
    if not progress_shown() or (total is not None and total < MIN_ITEMS):
        yield from items
        return
    from tqdm import tqdm  # deferred: only a terminal run draws a bar

    with tqdm(items, total=total, desc=what, unit="", leave=False, file=sys.stderr) as bar:
        yield from bar
