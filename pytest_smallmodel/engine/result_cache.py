"""Opt-in cache of engine results (``--smallmodel-cache``).

Greedy output is a deterministic function of the model bytes, the request (prompt text or chat
messages, kind, max_tokens, stop, schema, labels, numeric settings), the chat template and the
runtime fingerprint (llama.cpp build and library hashes, compiled features, CPU, backend). The
key hashes all of them, so any change to any part decodes for real. The prompt's token ids are
not in the key: they are a function of the same inputs (the model's vocabulary, the template,
the runtime's tokenizer and the versions of llama-cpp-python, jinja2 and this package, all
keyed), so a lookup needs no tokenizer; each entry stores them, with the rendered prompt, for
the result's provenance. Thread count is left out: it was measured not to change tokens. GPU
backends are refused unless forced, because some are not run-to-run deterministic.

The runtime fingerprint comes from an engine worker. The cache keeps the last worker's runtime
facts under a stamp of the installation (``fingerprint.runtime_stamp``), so that a rerun whose
results are all cached starts no worker at all.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.common.errors import ConfigError, FileSystemError
from pytest_smallmodel.common.fingerprint import INFORMATIONAL_FIELDS, runtime_stamp
from pytest_smallmodel.common.results import FinishReason, Request, Step, TokenLogprob
from pytest_smallmodel.common.version import __version__

CACHE_FORMAT_VERSION = 2
_RUNTIME_DIR = "runtime"


def lookup_record(request: Request) -> dict[str, Any]:
    """What the key holds of a request: its record without what tokenizing and rendering derive
    from the rest (token ids; for chat, the rendered prompt)."""
    record = request.as_record()
    del record["prompt_tokens"]
    if request.messages is not None:
        del record["prompt"]
    return record


@functools.cache
def prompt_software() -> dict[str, str]:
    """Versions of the code that turns a request into prompt tokens, besides llama.cpp (whose
    library hashes and llama-cpp-python version are fingerprint fields): jinja2 renders chat
    templates, this package decides BOS and special-token handling."""
    try:
        jinja2 = importlib.metadata.version("jinja2")
    except importlib.metadata.PackageNotFoundError:
        jinja2 = "not installed"
    return {"jinja2": jinja2, "pytest_smallmodel": __version__}


def cache_key(
    *,
    request: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    top_logprobs: int,
    chat_template: str | None = None,
    embedding: bool = False,
    software: Mapping[str, str] | None = None,
) -> str:
    """sha256 over the canonical JSON of everything that determines the result.

    ``request`` is a ``lookup_record`` (no token ids); ``chat_template`` the template text named
    in the model's spec, None for the GGUF's own (which the model sha256 in the fingerprint
    covers); ``software`` defaults to ``prompt_software()``.
    """
    material = {
        "format": CACHE_FORMAT_VERSION,
        "request": request,
        "fingerprint": {k: v for k, v in fingerprint.items() if k not in INFORMATIONAL_FIELDS},
        "top_logprobs": top_logprobs,
        "chat_template": chat_template,
        "embedding": embedding,
        "software": dict(prompt_software() if software is None else software),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def stored_request(source: Request, payload: Mapping[str, Any]) -> Request:
    """``source`` (a request as the test made it, before tokenizing) completed with the rendered
    prompt and token ids an entry stores; raises KeyError/TypeError/ValueError on a bad entry."""
    prompt = payload["prompt"]
    tokens = payload["prompt_tokens"]
    if not isinstance(prompt, str) or not isinstance(tokens, list):
        raise TypeError("prompt")
    if source.messages is None and prompt != source.prompt:
        raise ValueError("the entry holds another prompt")
    if any(isinstance(t, bool) or not isinstance(t, int) for t in tokens):
        raise TypeError("prompt_tokens")
    return replace(source, prompt=prompt, prompt_tokens=tuple(tokens))


def with_request(
    payload: Mapping[str, Any], request: Request, *, dated: bool = False
) -> dict[str, Any]:
    """An entry: the result's payload plus the rendered prompt and token ids of its request.

    ``dated``: the chat template calls ``strftime_now``, so the rendered prompt (which the key
    does not hold) can change by date; such an entry is used only after rendering it again.
    """
    entry = {**payload, "prompt": request.prompt, "prompt_tokens": list(request.prompt_tokens)}
    if dated:
        entry["dated"] = True
    return entry


class ResultCache:
    """One JSON file per key under ``root``; written atomically, so xdist workers can share it."""

    def __init__(self, root: Path, *, allow_gpu: bool = False) -> None:
        self.root = root
        self.allow_gpu = allow_gpu
        self._known: tuple[dict[str, Any] | None] | None = None  # known_runtime(), once read

    def check_backend(self, fingerprint: Mapping[str, Any]) -> None:
        backend = fingerprint.get("backend", "CPU")
        if backend != "CPU" and not self.allow_gpu:
            raise ConfigError(
                f"--smallmodel-cache is refused for the {backend} backend: GPU kernels are not "
                "always run-to-run deterministic, so a cached result could hide drift. Run "
                "without the cache, or pass --smallmodel-cache-gpu to accept that risk"
            )

    # -- runtime facts, so that a rerun served from the cache starts no engine worker ----------

    @functools.cached_property
    def _stamp(self) -> dict[str, Any]:
        return runtime_stamp()

    def _runtime_path(self) -> Path:
        canonical = json.dumps(self._stamp, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return self.root / _RUNTIME_DIR / f"{digest}.json"

    def known_runtime(self) -> dict[str, Any] | None:
        """The runtime facts an engine worker reported on this same installation, or None.

        None also for builds that can offload to a GPU: which devices they find is not a
        property of the installed files, so only a worker can say.
        """
        if self._known is None:
            self._known = (self._read_runtime(),)
        return self._known[0]

    def _read_runtime(self) -> dict[str, Any] | None:
        try:
            stored = json.loads(self._runtime_path().read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(stored, dict) or stored.get("stamp") != self._stamp:
            return None
        runtime = stored.get("runtime")
        if not isinstance(runtime, dict) or runtime.get("gpu_offload_supported") is not False:
            return None
        return runtime

    def remember_runtime(self, runtime: Mapping[str, Any]) -> None:
        """Keep a worker's runtime facts for later sessions (best effort: a full disk only costs
        the next rerun a worker start)."""
        self._known = None  # read again on the next lookup
        text = json.dumps({"stamp": self._stamp, "runtime": dict(runtime)}, sort_keys=True)
        try:
            path = self._runtime_path()
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                atomic_write_text(path, text)
        except (OSError, FileSystemError):
            return

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored payload, or None when absent or unreadable (a corrupt entry is recomputed)."""
        path = self._path(key)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(payload, dict) or payload.get("key") != key:
            return None
        value = payload.get("value")
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        text = json.dumps({"key": key, "value": value}, ensure_ascii=False, sort_keys=True)
        atomic_write_text(self._path(key), text)


# -- what an entry holds: each parser raises KeyError, TypeError or ValueError on a bad entry,
# which the caller treats as a miss (the result is computed again) --------------------------------


@dataclass(frozen=True)
class StoredGeneration:
    text: str
    finish_reason: FinishReason
    steps: list[Step]

    def payload(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "steps": [
                [s.token, s.text, s.logprob, [[t.token, t.text, t.logprob] for t in s.top]]
                for s in self.steps
            ],
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> StoredGeneration:
        finish = payload["finish_reason"]
        if finish not in ("stop", "length"):
            raise ValueError(finish)
        steps = [
            Step(
                int(token),
                str(text),
                float(logprob),
                tuple(TokenLogprob(int(t), str(p), float(lp)) for t, p, lp in top),
            )
            for token, text, logprob, top in payload["steps"]
        ]
        return cls(str(payload["text"]), finish, steps)


@dataclass(frozen=True)
class StoredLabel:
    label: str
    logprobs: Mapping[str, float]

    def payload(self) -> dict[str, Any]:
        return {"label": self.label, "logprobs": dict(self.logprobs)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], labels: Sequence[str]) -> StoredLabel:
        logprobs = {str(k): float(v) for k, v in payload["logprobs"].items()}
        if payload["label"] not in labels or set(logprobs) != set(labels):
            raise ValueError("labels differ")
        return cls(str(payload["label"]), logprobs)


def vector_payload(vector: Sequence[float]) -> dict[str, Any]:
    return {"vector": list(vector)}


def stored_vector(payload: Mapping[str, Any]) -> list[float]:
    return [float(x) for x in payload["vector"]]
