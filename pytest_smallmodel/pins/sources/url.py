"""``url``: a file at an HTTP(S) address, optionally declared with its sha256.

There is no metadata to trust, so resolution downloads the file into the project cache (so a
later ``pull`` is free), hashes it while streaming and checks it against a declared sha256.
Downloads write to a temporary file beside the target and are renamed into place only after the
size and sha256 check, so an interrupted, truncated or corrupted transfer never leaves a file at
the final path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlparse

from pytest_smallmodel.common.atomic import atomic_target, remove_stale_temporaries
from pytest_smallmodel.common.errors import SourceError
from pytest_smallmodel.pins.gguf_info import read_facts
from pytest_smallmodel.pins.hashing import (
    BLOCK_SIZE,
    FileIdentity,
    StatCache,
    Verification,
    downloaded_mismatch,
    progress_bar,
    verify_pin,
)
from pytest_smallmodel.pins.lockfile import LockedModel, make_pin
from pytest_smallmodel.pins.project import ModelSpec, Project
from pytest_smallmodel.pins.source_specs import UrlSpec
from pytest_smallmodel.pins.sources import base
from pytest_smallmodel.pins.sources.base import USER_AGENT, Source, progress_enabled

_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


class UrlSource(Source):
    spec = UrlSpec()

    def resolve(self, project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
        return _resolve_url(project, spec, progress=progress)

    def candidate_path(self, project: Project, locked: LockedModel) -> Path | None:
        return url_cache_path(project, locked.source["url"])

    def fetch(
        self, project: Project, locked: LockedModel, current: Verification, *, progress: bool
    ) -> Verification:
        if current.status == "mismatch" and current.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(current.path)  # our own cached download, never a user's file
        target = url_cache_path(project, locked.source["url"])
        remove_stale_downloads(project)
        download = _download_url(
            locked.source["url"],
            target,
            expected_sha256=locked.sha256,
            expected_size=locked.size,
            progress=progress,
            name=locked.name,
        )
        if download.sha256 != locked.sha256:
            return downloaded_mismatch(
                Verification(locked.name, target, "mismatch", locked.sha256, download.sha256)
            )
        return verify_pin(self, project, locked)


def url_cache_path(project: Project, url: str) -> Path:
    """Cache location of a url source: keyed by the URL so the target is known before download."""
    url_key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    last_segment = PurePosixPath(urlparse(url).path).name
    filename = _SAFE_NAME_RE.sub("_", last_segment).strip("._") or "model.gguf"
    return project.cache_dir / "url" / url_key / filename


def remove_stale_downloads(project: Project) -> list[Path]:
    """Delete the temporary files of url downloads whose process was killed (SIGKILL leaves
    them, tens of MB or more each), in every url cache directory; returns what was removed."""
    removed: list[Path] = []
    with contextlib.suppress(OSError):  # no url cache yet
        for entry in os.scandir(project.cache_dir / "url"):
            if entry.is_dir(follow_symlinks=False):
                removed += remove_stale_temporaries(Path(entry.path))
    return removed


class _Download:
    def __init__(self, sha256: str, size: int) -> None:
        self.sha256 = sha256
        self.size = size


def _download_url(
    url: str,
    target: Path,
    *,
    expected_sha256: str | None,
    expected_size: int | None,
    progress: bool,
    name: str,
) -> _Download:
    """Stream ``url`` to ``target`` atomically, hashing on the way.

    The file reaches ``target`` only if the transfer is complete and, when ``expected_sha256``
    is given, matches it; otherwise the temporary file is removed. A sha256 mismatch is returned
    (not raised) so the caller can report expected vs actual.
    """
    # Imported here: every pytest session imports the sources, few of them download.
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    what = f"{name}: downloading {url}"

    class _Rejected(Exception):
        """Raised inside atomic_target to discard the temporary file."""

    try:
        with urllib.request.urlopen(request, timeout=base.HTTP_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            total = int(declared) if declared and declared.isdigit() else expected_size
            try:
                with atomic_target(target) as out:
                    sha256, size = _copy_hashing(
                        response, out, total, progress_enabled(progress), target.name
                    )
                    if declared is not None and declared.isdigit() and size != int(declared):
                        raise SourceError(
                            f"{what} failed: the transfer was truncated ({size} of {declared} "
                            "bytes). Nothing was kept; retry."
                        )
                    if expected_sha256 is not None and sha256 != expected_sha256:
                        raise _Rejected
            except _Rejected:
                return _Download(sha256, size)
    except SourceError:
        raise
    except urllib.error.HTTPError as exc:
        hint = "check the url in [tool.smallmodel.models]" if exc.code in (404, 410) else "retry"
        raise SourceError(f"{what} failed: HTTP {exc.code} {exc.reason}; {hint}.") from exc
    except (TimeoutError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            raise SourceError(
                f"{what} failed: timed out after {base.HTTP_TIMEOUT_S:g} s without data. Nothing "
                "was kept; check your connection and retry."
            ) from exc
        raise SourceError(f"{what} failed: {reason}. Check the url and your connection.") from exc
    except (http.client.HTTPException, OSError) as exc:
        raise SourceError(
            f"{what} failed: the connection broke ({type(exc).__name__}). Nothing was kept; retry."
        ) from exc
    return _Download(sha256, size)


def _copy_hashing(
    source: Any, out: IO[bytes], total: int | None, progress: bool, label: str
) -> tuple[str, int]:
    digest = hashlib.sha256()
    buffer = bytearray(BLOCK_SIZE)
    view = memoryview(buffer)
    size = 0
    bar: Any = progress_bar(total, label) if progress else None
    try:
        while True:
            count = source.readinto(view)
            if not count:
                break
            chunk = view[:count]
            digest.update(chunk)
            out.write(chunk)
            size += count
            if bar is not None:
                bar.update(count)
    finally:
        if bar is not None:
            bar.close()
    return digest.hexdigest(), size


def _resolve_url(project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
    url = spec.source["url"]
    declared = spec.source.get("sha256")
    expected = declared.lower() if declared else None
    target = url_cache_path(project, url)
    remove_stale_downloads(project)
    download = _download_url(
        url, target, expected_sha256=expected, expected_size=None, progress=progress, name=spec.name
    )
    if expected is not None and download.sha256 != expected:
        raise SourceError(
            f"{spec.name}: {url} does not match the sha256 declared in [tool.smallmodel.models]\n"
            f"  declared sha256: {expected}\n  actual sha256:   {download.sha256}\n"
            "  The download was discarded. Fix the sha256 in the spec if the new file is intended."
        )
    StatCache(project.cache_dir).store(FileIdentity.of(target), download.sha256)
    facts = read_facts(target)
    return make_pin(spec.name, download.sha256, download.size, spec.normalized_source(), facts)
