"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Every file this project writes (lock, goldens, downloads, caches) goes through here or through
``atomic_target`` so that an interrupted process or a concurrent pytest-xdist worker cannot leave
a partial file at the final path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_target(path: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Yield a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line endings on every platform (stable bytes for review)."""
    atomic_write_bytes(path, text.encode("utf-8"))
