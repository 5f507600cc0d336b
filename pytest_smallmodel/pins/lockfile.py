"""models.lock: the committed pins (sha256, size, resolved source, GGUF header facts).

The lock is TOML, written only by ``smallmodel lock``, sorted by model name, with deterministic
bytes so that locking twice writes an identical file and diffs stay reviewable. Every lock that
is read is validated against the JSON Schema shipped in the package (lock.schema.json).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pytest_smallmodel.common.atomic import atomic_write_text
from pytest_smallmodel.common.errors import LockError, file_error
from pytest_smallmodel.pins.source_specs import SOURCE_SPECS, SourceSpec

if TYPE_CHECKING:
    from pytest_smallmodel.pins.gguf_info import GGUFFacts

LOCK_VERSION = 1
LOCK_HEADER = (
    "# models.lock: written by `smallmodel lock`; do not edit by hand.\n"
    "# Pins each model of [tool.smallmodel.models] to exact bytes (sha256). Commit this file.\n"
)


class NewerLockError(LockError):
    """models.lock has a format newer than this version reads: upgrading is the only fix."""


@dataclass(frozen=True)
class LockedModel:
    name: str
    sha256: str
    size: int
    source: Mapping[str, str]
    architecture: str | None = None
    file_type: str | None = None
    context_length: int | None = None
    chat_template_sha256: str | None = None
    # A template file from the spec (chat_template = "..."): {"path": ..., "sha256": ...}.
    chat_template_file: Mapping[str, str] | None = None

    @property
    def short_sha(self) -> str:
        return self.sha256[:8]

    @property
    def kind(self) -> str:
        """The key of its kind of source ("hf", "url", ...)."""
        return self.source_kind.kind

    @property
    def source_kind(self) -> SourceSpec:
        for kind, source_kind in SOURCE_SPECS.items():
            if kind in self.source:
                return source_kind
        raise LockError(f"models.lock: model {self.name!r} has no source kind")  # schema forbids

    def declared_source(self) -> dict[str, str]:
        """The source as it was declared (resolved keys removed), to compare with the spec."""
        declared = self.source_kind.declared_keys
        return {key: value for key, value in self.source.items() if key in declared}

    def describe_source(self) -> str:
        """One line for tables and messages, e.g. ``hf:org/repo@abc1234/file.gguf``."""
        return self.source_kind.describe(self.source)


@dataclass(frozen=True)
class Lock:
    version: int
    models: Mapping[str, LockedModel] = field(default_factory=lambda: MappingProxyType({}))


@cache
def lock_schema() -> dict[str, Any]:
    text = resources.files("pytest_smallmodel").joinpath("lock.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def read_lock(path: Path, *, validated_dir: Path | None = None) -> Lock:
    """Read and validate models.lock; LockError names the model and field on any problem.

    ``validated_dir``: where to remember lock texts that passed the schema, so that a later
    session reading the same bytes skips jsonschema (about 50 ms of imports and checks)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LockError(
            f"{path} not found. Run `smallmodel lock` to create it, then commit it."
        ) from exc
    except UnicodeDecodeError as exc:
        raise LockError(f"{path}: cannot be read: {exc}.") from exc
    except OSError as exc:  # a directory, permissions: not a lock problem, a file-system one
        raise file_error("read", Path(path), exc) from None
    return parse_lock(text, Path(path), validated_dir=validated_dir)


def parse_lock(text: str, path: Path, *, validated_dir: Path | None = None) -> Lock:
    fix = "Restore it from version control or run `smallmodel lock` to rewrite it."
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{path}: invalid TOML: {exc}. {fix}") from exc

    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > LOCK_VERSION:
        # Rewriting it with this version would drop what the newer one records.
        raise NewerLockError(
            f"{path} was written by a newer pytest-smallmodel (lock format {version}; this "
            f"version reads format {LOCK_VERSION}): upgrade pytest-smallmodel "
            "(pip install -U pytest-smallmodel)."
        )
    marker = _validated_marker(validated_dir, text)
    if marker is None or not marker.exists():
        _validate(document, path, fix)
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
    if document["version"] != LOCK_VERSION:  # pragma: no cover - the schema pins the version
        raise LockError(f"{path}: unsupported lock version {document['version']}. {fix}")

    models: dict[str, LockedModel] = {}
    for entry in document.get("model", []):
        name = entry["name"]
        if name in models:
            raise LockError(
                f"{path}: model {name!r} is listed twice. Remove one [[model]] entry or run "
                "`smallmodel lock` to rewrite the file."
            )
        models[name] = LockedModel(
            name=name,
            sha256=entry["sha256"],
            size=entry["size"],
            source=MappingProxyType(dict(entry["source"])),
            architecture=entry.get("architecture"),
            file_type=entry.get("file_type"),
            context_length=entry.get("context_length"),
            chat_template_sha256=entry.get("chat_template_sha256"),
            chat_template_file=_template_entry(entry.get("chat_template_file")),
        )
    return Lock(version=document["version"], models=MappingProxyType(dict(sorted(models.items()))))


def _template_entry(raw: Mapping[str, str] | None) -> Mapping[str, str] | None:
    if raw is None:
        return None
    return MappingProxyType({"path": raw["path"], "sha256": raw["sha256"]})


def _validated_marker(directory: Path | None, text: str) -> Path | None:
    """The file whose presence says that ``text`` passed this schema under this jsonschema."""
    if directory is None:
        return None
    try:
        checker = importlib.metadata.version("jsonschema")
    except importlib.metadata.PackageNotFoundError:
        return None
    schema = resources.files("pytest_smallmodel").joinpath("lock.schema.json").read_bytes()
    digest = hashlib.sha256()
    for part in (schema, checker.encode(), text.encode("utf-8")):
        digest.update(hashlib.sha256(part).digest())
    return directory / f"lock-{digest.hexdigest()}"


def _validate(document: dict[str, Any], path: Path, fix: str) -> None:
    import jsonschema  # deferred: costs ~50 ms to import, only readers need it

    validator = jsonschema.Draft202012Validator(lock_schema())
    errors = sorted(
        validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors) or errors[0]
    location = list(error.absolute_path)
    where = f"{path}:"
    field_path = location
    if len(location) >= 2 and location[0] == "model" and isinstance(location[1], int):
        entries = document.get("model", [])
        entry = entries[location[1]] if location[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        where += (
            f" model {name!r}" if isinstance(name, str) else f" [[model]] entry #{location[1] + 1}"
        )
        field_path = location[2:]
    field_name = ".".join(str(part) for part in field_path) or "(table)"
    raise LockError(f"{where} field {field_name}: {_describe(error)}. {fix}")


def _describe(error: Any) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "pattern" and "{64}" in str(schema.get("pattern", "")):
        return f"{error.instance!r} is not a sha256 (64 lowercase hexadecimal characters)"
    if error.validator == "pattern" and "{40}" in str(schema.get("pattern", "")):
        return f"{error.instance!r} is not a 40-character hexadecimal commit id"
    message: str = error.message
    return message


def render_lock(lock: Lock) -> str:
    """The exact text of models.lock for ``lock`` (sorted, stable key order)."""
    import tomli_w

    entries = []
    for name in sorted(lock.models):
        model = lock.models[name]
        entry: dict[str, Any] = {"name": model.name, "sha256": model.sha256, "size": model.size}
        for key in ("architecture", "file_type", "context_length", "chat_template_sha256"):
            value = getattr(model, key)
            if value is not None:
                entry[key] = value
        if model.chat_template_file is not None:
            entry["chat_template_file"] = {
                "path": model.chat_template_file["path"],
                "sha256": model.chat_template_file["sha256"],
            }
        # The kind's key first, then what refines it, then what lock resolved; anything else
        # last, for the schema check in write_lock to reject.
        kind = model.source_kind
        order = [*kind.declared_keys, *kind.resolved_keys]
        order += sorted(set(model.source) - set(order))
        entry["source"] = {key: model.source[key] for key in order if key in model.source}
        entries.append(entry)
    document: dict[str, Any] = {"version": lock.version}
    if entries:
        document["model"] = entries
    return LOCK_HEADER + "\n" + tomli_w.dumps(document)


def write_lock(path: Path, lock: Lock) -> None:
    """Write models.lock atomically; identical locks give identical bytes."""
    text = render_lock(lock)
    # Validate what we write with the same schema we read with, so a bug cannot commit a bad lock.
    parse_lock(text, Path(path))
    atomic_write_text(Path(path), text)


def make_pin(
    name: str, sha256: str, size: int, source: Mapping[str, str], facts: GGUFFacts
) -> LockedModel:
    """A kind of source's pin of a file: what it resolved, with the file's GGUF facts."""
    return LockedModel(
        name=name,
        sha256=sha256,
        size=size,
        source=MappingProxyType(dict(source)),
        architecture=facts.architecture,
        file_type=facts.file_type,
        context_length=facts.context_length,
        chat_template_sha256=facts.chat_template_sha256,
    )
