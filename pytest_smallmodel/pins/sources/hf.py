"""``hf``: a file in a Hugging Face Hub repo, pinned to a commit.

Resolution asks the Hub for the revision's commit (repo info), matches a glob to exactly one
file, and takes sha256 + size from the Hub's paths-info (Git LFS metadata) without downloading.
The GGUF header facts are read with one HTTP Range request that stops as soon as the key/value
section is parsed, so the weights are never transferred (unless the file is already in the local
HF cache, which is read instead). A non-LFS file has no sha256 on the Hub and is streamed once.
Downloads go to the Hugging Face cache; ``HF_TOKEN`` is sent to the Hub only, as a Bearer
header, and never recorded.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pytest_smallmodel.common.errors import (
    FileSystemError,
    SourceError,
    file_error,
    file_in_the_way,
)
from pytest_smallmodel.common.version import __version__
from pytest_smallmodel.pins.gguf_info import GGUFFacts, read_facts, read_facts_from_stream
from pytest_smallmodel.pins.hashing import Verification, downloaded_mismatch, verify_pin
from pytest_smallmodel.pins.lockfile import LockedModel, make_pin
from pytest_smallmodel.pins.project import ModelSpec, Project
from pytest_smallmodel.pins.source_specs import DEFAULT_HF_REVISION, HuggingFaceSpec, is_glob
from pytest_smallmodel.pins.sources import base
from pytest_smallmodel.pins.sources.base import (
    USER_AGENT,
    Source,
    progress_enabled,
    quiet_tqdm_class,
)


class HuggingFaceSource(Source):
    spec = HuggingFaceSpec()

    def resolve(self, project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
        return _resolve_hf(spec)

    def candidate_path(self, project: Project, locked: LockedModel) -> Path | None:
        source = locked.source
        return _hf_cached_path(source["hf"], source["filename"], source["commit"])

    def fetch(
        self, project: Project, locked: LockedModel, current: Verification, *, progress: bool
    ) -> Verification:
        if current.status == "mismatch" and current.path is not None:
            _discard(current.path)
        resumed = _resume_hf_download(locked, progress=progress)
        path = _download_hf(locked, progress=progress)
        result = verify_pin(self, project, locked, full=True, progress=progress)
        if not result.ok and resumed:
            # The leftover was not a prefix of this file after all: download it whole.
            _discard(path)
            path = _download_hf(locked, progress=progress)
            result = verify_pin(self, project, locked, full=True, progress=progress)
        if not result.ok:
            _discard(path)
            return downloaded_mismatch(result)
        return result


def _discard(path: Path) -> None:
    """Delete a bad copy in the Hugging Face cache.

    The snapshot entry is a symlink to a blob named by its etag; remove both so the next
    download starts clean instead of re-linking the corrupt blob.
    """
    blob = Path(os.path.realpath(path))
    for doomed in (path, blob):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(doomed)


def hf_endpoint() -> str:
    """HF_ENDPOINT, read at call time (huggingface_hub freezes it at import time)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _hf_cached_path(repo: str, filename: str, commit: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(), revision=commit)
    return Path(found) if isinstance(found, str) else None


@contextlib.contextmanager
def _hf_errors(name: str, repo: str, what: str) -> Iterator[None]:
    """Turn huggingface_hub / httpx errors into one SourceError naming the model and the fix."""
    import httpx2
    from huggingface_hub import errors as hf

    prefix = f"{name}: {what} {repo!r} on {hf_endpoint()} failed"
    try:
        yield
    except SourceError:
        raise
    except hf.GatedRepoError as exc:
        raise SourceError(
            f"{prefix}: the repo is gated. Accept its terms on the Hub and set HF_TOKEN to a token "
            "with access."
        ) from exc
    except hf.RepositoryNotFoundError as exc:
        raise SourceError(
            f"{prefix}: repository not found (or private without a valid HF_TOKEN). Check the "
            "hf = ... value in [tool.smallmodel.models], or set HF_TOKEN."
        ) from exc
    except hf.RevisionNotFoundError as exc:
        raise SourceError(
            f"{prefix}: revision not found. Check revision = ... in [tool.smallmodel.models]."
        ) from exc
    except hf.RemoteEntryNotFoundError as exc:
        raise SourceError(
            f"{prefix}: file not found in the repo at that revision. Check file = ... in "
            "[tool.smallmodel.models]."
        ) from exc
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " Set HF_TOKEN to a valid token." if status in (401, 403) else " Retry later."
        raise SourceError(f"{prefix}: HTTP {status} from the Hub.{hint}") from exc
    except (httpx2.TimeoutException, TimeoutError) as exc:
        raise SourceError(
            f"{prefix}: timed out. Check your connection (or HF_ENDPOINT) and retry."
        ) from exc
    except hf.LocalEntryNotFoundError as exc:
        answered = _http_status_in_chain(exc)
        if answered is not None:  # the Hub answered with an error: it was reached
            raise SourceError(
                f"{prefix}: the Hub answered HTTP {answered} (after retries) and the file is not "
                "cached. Retry later; if it persists, check the Hub's status."
            ) from exc
        raise SourceError(
            f"{prefix}: the Hub could not be reached and the file is not cached. Check your "
            "connection (or HF_ENDPOINT) and retry."
        ) from exc
    except (httpx2.HTTPError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
            where = Path(exc.filename) if exc.filename else hf_cache_dir()
            raise file_error("write", where, exc) from None
        raise SourceError(
            f"{prefix}: {type(exc).__name__}: {exc}. Retry, or check HF_ENDPOINT."
        ) from exc


# Errors of the local file system (never of the network) during a Hub download.
_LOCAL_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EISDIR,
    }
)


def _http_status_in_chain(error: BaseException) -> int | None:
    """The HTTP status of the first error in ``error``'s cause chain that carries a response."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return None


def _hf_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(
        endpoint=hf_endpoint(),
        token=_hf_token(),
        library_name=USER_AGENT,
        library_version=__version__,
    )


def _resolve_hf(spec: ModelSpec) -> LockedModel:
    repo = spec.source["hf"]
    pattern = spec.source["file"]
    revision = spec.source.get("revision", DEFAULT_HF_REVISION)
    api = _hf_api()
    with _hf_errors(spec.name, repo, "resolving"):
        info = api.model_info(repo, revision=revision, timeout=base.HTTP_TIMEOUT_S)
        commit = info.sha
        if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise SourceError(
                f"{spec.name}: the Hub returned no commit id for {repo!r} at {revision!r}; "
                "check HF_ENDPOINT points to a Hugging Face Hub."
            )
        filename = _match_hf_file(spec, [s.rfilename for s in info.siblings or []], commit)
        entries = api.get_paths_info(repo, [filename], revision=commit)
        files = [entry for entry in entries if getattr(entry, "path", None) == filename]
        if not files or not hasattr(files[0], "lfs"):
            raise SourceError(
                f"{spec.name}: {filename!r} is not a file in {repo!r} at {revision!r}. Check "
                "file = ... in [tool.smallmodel.models]."
            )
        entry = files[0]
        url = _hf_file_url(repo, filename, commit)
        if entry.lfs is not None:
            sha256, size = str(entry.lfs.sha256).lower(), int(entry.lfs.size)
            facts = _hf_header_facts(spec.name, repo, filename, commit, url)
        else:
            # Small non-LFS files carry only a git blob id: hash them by streaming once.
            sha256, size, facts = _hf_stream_whole(spec.name, url)
    source = {
        "hf": repo,
        "file": pattern,
        "revision": revision,
        "commit": commit,
        "filename": filename,
    }
    return make_pin(spec.name, sha256, size, source, facts)


def _match_hf_file(spec: ModelSpec, repo_files: list[str], commit: str) -> str:
    pattern = spec.source["file"]
    if not is_glob(pattern):
        return pattern
    matches = sorted(name for name in repo_files if fnmatch.fnmatchcase(name, pattern))
    if len(matches) == 1:
        return matches[0]
    ggufs = sorted(name for name in repo_files if name.endswith(".gguf"))
    where = f"{spec.name}: file = {pattern!r} in {spec.source['hf']!r}@{commit[:7]}"
    if not matches:
        listing = ", ".join(ggufs[:20]) or "(no .gguf files)"
        raise SourceError(f"{where} matches no file. GGUF files there: {listing}.")
    raise SourceError(
        f"{where} matches {len(matches)} files ({', '.join(matches[:20])}); a glob must match "
        "exactly one. Make the pattern more specific or name the file."
    )


def _hf_file_url(repo: str, filename: str, commit: str) -> str:
    # Built here rather than with hf_hub_url, whose template freezes HF_ENDPOINT at import time.
    return f"{hf_endpoint()}/{repo}/resolve/{quote(commit, safe='')}/{quote(filename)}"


def _hf_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Public API (documented), but not re-exported in a way mypy accepts.
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    headers: dict[str, str] = build_hf_headers(
        token=_hf_token(), library_name=USER_AGENT, library_version=__version__
    )
    headers.update(extra or {})
    return headers


def _hf_header_facts(name: str, repo: str, filename: str, commit: str, url: str) -> GGUFFacts:
    cached = _hf_cached_path(repo, filename, commit)
    if cached is not None:
        return read_facts(cached)
    from huggingface_hub import get_session, hf_raise_for_status

    from pytest_smallmodel.pins.gguf_info import MAX_HEADER_BYTES

    headers = _hf_headers(
        {"Range": f"bytes=0-{MAX_HEADER_BYTES - 1}", "Accept-Encoding": "identity"}
    )
    with get_session().stream("GET", url, headers=headers, timeout=base.HTTP_TIMEOUT_S) as response:
        hf_raise_for_status(response)
        chunks = response.iter_bytes()
        # The parse stops pulling once the key/value section is read; leaving the `with`
        # closes the connection, so the rest of the file is never transferred.
        return read_facts_from_stream(lambda _size: next(chunks, b""), f"{name}: {url}")


def _hf_stream_whole(name: str, url: str) -> tuple[str, int, GGUFFacts]:
    from huggingface_hub import get_session, hf_raise_for_status

    digest = hashlib.sha256()
    size = 0
    prefix = bytearray()
    headers = _hf_headers({"Accept-Encoding": "identity"})
    with get_session().stream("GET", url, headers=headers, timeout=base.HTTP_TIMEOUT_S) as response:
        hf_raise_for_status(response)
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
            if len(prefix) < (16 << 20):
                prefix += chunk
    from pytest_smallmodel.pins.gguf_info import parse_facts

    return digest.hexdigest(), size, parse_facts(bytes(prefix), f"{name}: {url}")


def _usable_hf_cache(name: str) -> Path:
    """The Hugging Face cache directory, or a FileSystemError when a file blocks it (which
    huggingface_hub reports as a network failure)."""
    cache = hf_cache_dir()
    blocker = file_in_the_way(cache)
    if blocker is not None:
        raise FileSystemError(
            f"{name}: cannot download into the Hugging Face cache {cache}: {blocker} is a file "
            "where a directory is needed. Remove or rename it, or set HF_HUB_CACHE to a directory."
        )
    return cache


def _resume_hf_download(locked: LockedModel, *, progress: bool) -> bool:
    """Finish a Hub download that a killed process left behind, from where it stopped.

    huggingface_hub (2.x) downloads a blob into ``blobs/<etag>.<random>.incomplete``, unique to
    the process, and deletes it on failure; a killed process cannot, and the next
    hf_hub_download starts from zero in a new file. Holding the client's own per-blob lock (so
    never while another process downloads the blob), this completes the largest leftover with
    the client's ``http_get(resume_size=...)`` (an HTTP Range request), moves it into place as
    the blob and deletes the other leftovers. True when it resumed; the caller verifies the
    sha256 and falls back to a whole download if the result does not match.
    """
    from filelock import FileLock, Timeout
    from huggingface_hub.file_download import http_get, repo_folder_name

    source = locked.source
    cache = _usable_hf_cache(locked.name)
    folder = repo_folder_name(repo_id=source["hf"], repo_type="model")
    blobs = cache / folder / "blobs"
    etag = locked.sha256  # LFS blobs (all GGUF files on the Hub) are named by their sha256
    if not any(blobs.glob(f"{etag}.*.incomplete")):
        return False
    try:
        with FileLock(cache / ".locks" / folder / f"{etag}.lock", timeout=0):
            partials = sorted(
                ((p.stat().st_size, p) for p in blobs.glob(f"{etag}.*.incomplete")), reverse=True
            )
            keep = None if (blobs / etag).exists() or not partials else partials[0][1]
            for _, partial in partials:
                if partial != keep:
                    partial.unlink(missing_ok=True)
            if keep is None:
                return False
            url = _hf_file_url(source["hf"], source["filename"], source["commit"])
            with _hf_errors(locked.name, source["hf"], "resuming the download from"):
                with open(keep, "r+b") as handle:
                    handle.seek(0, os.SEEK_END)
                    http_get(
                        url,
                        handle,
                        resume_size=handle.tell(),
                        headers=_hf_headers({"Accept-Encoding": "identity"}),
                        expected_size=locked.size,
                        displayed_filename=source["filename"],
                        tqdm_class=None if progress_enabled(progress) else quiet_tqdm_class(),
                    )
                os.replace(keep, blobs / etag)
            return True
    except Timeout:
        return False  # another process is downloading this blob now; hf_hub_download waits


def _download_hf(locked: LockedModel, *, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download

    source = locked.source
    with _hf_errors(locked.name, source["hf"], "downloading from"):
        path = hf_hub_download(
            source["hf"],
            source["filename"],
            revision=source["commit"],
            cache_dir=hf_cache_dir(),
            token=_hf_token(),
            endpoint=hf_endpoint(),
            library_name=USER_AGENT,
            library_version=__version__,
            etag_timeout=base.HTTP_TIMEOUT_S,
            tqdm_class=None if progress_enabled(progress) else quiet_tqdm_class(),
        )
    return Path(path)
