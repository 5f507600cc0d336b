"""Opt-in cache of engine results (``--smallmodel-cache``).

Greedy output is a deterministic function of the model bytes, the request (prompt token ids,
kind, max_tokens, stop, schema, labels, numeric settings) and the runtime fingerprint (llama.cpp
build and library hashes, compiled features, CPU, backend). The key hashes all of them, so any
change to any part decodes for real. Thread count is left out: it was measured not to change
tokens. GPU backends are refused unless forced, because some are not run-to-run deterministic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_smallmodel.atomic import atomic_write_text
from pytest_smallmodel.errors import ConfigError
from pytest_smallmodel.fingerprint import INFORMATIONAL_FIELDS
from pytest_smallmodel.results import FinishReason, Step, TokenLogprob

CACHE_FORMAT_VERSION = 1


def cache_key(
    *, request: Mapping[str, Any], fingerprint: Mapping[str, Any], top_logprobs: int
) -> str:
    """sha256 over the canonical JSON of everything that determines the result."""
    material = {
        "format": CACHE_FORMAT_VERSION,
        "request": request,
        "fingerprint": {k: v for k, v in fingerprint.items() if k not in INFORMATIONAL_FIELDS},
        "top_logprobs": top_logprobs,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResultCache:
    """One JSON file per key under ``root``; written atomically, so xdist workers can share it."""

    def __init__(self, root: Path, *, allow_gpu: bool = False) -> None:
        self.root = root
        self.allow_gpu = allow_gpu

    def check_backend(self, fingerprint: Mapping[str, Any]) -> None:
        backend = fingerprint.get("backend", "CPU")
        if backend != "CPU" and not self.allow_gpu:
            raise ConfigError(
                f"--smallmodel-cache is refused for the {backend} backend: GPU kernels are not "
                "always run-to-run deterministic, so a cached result could hide drift. Run "
                "without the cache, or pass --smallmodel-cache-gpu to accept that risk"
            )

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
