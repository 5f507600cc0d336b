"""The project's declared models and settings, read from ``[tool.smallmodel]`` in pyproject.toml.

Everything here is validated up front so that a typo surfaces as one ``ConfigError`` naming the
file, the key and the fix, before any download or model load starts.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from pytest_smallmodel.common.errors import ConfigError
from pytest_smallmodel.pins.source_specs import SOURCE_SPECS, check_relative_path

# Pending goldens (failed assertions' new results), relative to the pytest rootdir.
DEFAULT_PENDING_DIR = ".smallmodel/pending"
MODEL_NAME_RE: re.Pattern[str] = re.compile(r"[a-z0-9][a-z0-9._-]*")

# Every key of [tool.smallmodel]; docs/configuration.md describes each.
TOP_LEVEL_KEYS: frozenset[str] = frozenset(
    {
        "models",
        "settings",
        "cache_dir",
        "golden_dir",
        "tolerance",
        "embedding_min_cosine",
        "result_cache_dir",
        "pending_dir",
    }
)

NON_SOURCE_SPEC_KEYS: frozenset[str] = frozenset(
    {"settings", "embedding", "chat_template", "backend", "server", "api", "tolerance"}
)
# What runs a model (docs/backends.md): llama-cpp-python in an engine worker process, or
# llama.cpp's llama-server, started by the harness or already running at ``server``.
BACKENDS: tuple[str, ...] = ("llama-cpp-python", "llama-server")
SERVER_APIS: tuple[str, ...] = ("llama-server", "openai")
CACHE_DIR_ENV = "SMALLMODEL_CACHE_DIR"
CACHE_APP_NAME = "pytest-smallmodel"


@dataclass(frozen=True)
class Serving:
    """Which backend runs the model: ``backend``, and for a running server its URL and API."""

    backend: str = "llama-cpp-python"
    server: str | None = None  # None: the harness starts llama-server itself (managed)
    api: str = "llama-server"

    @property
    def managed(self) -> bool:
        return self.backend == "llama-server" and self.server is None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # the key of its kind of source (source_specs.SOURCE_SPECS): "hf", "url"...
    source: Mapping[str, str]
    settings: Mapping[str, Any]
    embedding: bool
    chat_template: str | None = None
    serving: Serving = field(default_factory=lambda: Serving())
    # Nats for this model's goldens in tolerance mode (`smallmodel calibrate --write` sets it);
    # None: [tool.smallmodel] tolerance. Not part of the pin: it judges outputs, makes none.
    tolerance: float | None = None

    @property
    def is_glob(self) -> bool:
        """True when the spec names its file with a pattern that lock must resolve."""
        return SOURCE_SPECS[self.kind].is_glob(self.source)

    def normalized_source(self) -> dict[str, str]:
        """The declared source with defaults filled in: what a pin must agree with to be fresh."""
        return SOURCE_SPECS[self.kind].normalized(self.source)


@dataclass(frozen=True)
class Options:
    """The scalar options of [tool.smallmodel], typed and validated once, when it is read."""

    # Goldens, relative to the pytest rootdir.
    golden_dir: str = "golden"
    # Nats a golden token may trail the best one when the fingerprint changed; None: the default
    # of the drift policy.
    tolerance: float | None = None
    embedding_min_cosine: float | None = None
    # The stored results of --smallmodel-cache, relative to the project root; None: under the
    # model cache.
    result_cache_dir: str | None = None
    # As written; Project.cache_dir is where it leads (SMALLMODEL_CACHE_DIR first).
    cache_dir: str | None = None
    # Pending goldens (failed assertions' new results), relative to the pytest rootdir.
    pending_dir: str = DEFAULT_PENDING_DIR


@dataclass(frozen=True)
class Project:
    root: Path
    pyproject: Path
    models: Mapping[str, ModelSpec]
    settings: Mapping[str, Any]
    options: Options
    lock_path: Path
    cache_dir: Path

    @property
    def result_cache_dir(self) -> Path:
        """Where --smallmodel-cache stores results."""
        configured = self.options.result_cache_dir
        return self.cache_dir / "results" if configured is None else self.root / configured


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml in ``start`` or one of its parents."""
    directory = Path(start).resolve()
    if directory.is_file():
        directory = directory.parent
    for candidate_dir in (directory, *directory.parents):
        candidate = candidate_dir / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_project(start: Path | None = None) -> Project:
    """Find and validate the project around ``start`` (default: the current directory)."""
    start_dir = Path.cwd() if start is None else Path(start)
    pyproject = find_pyproject(start_dir)
    if pyproject is None:
        raise ConfigError(
            f"No pyproject.toml found in {start_dir.resolve()} or any parent directory. "
            "Run from inside your project, pass --project DIR, or create a pyproject.toml with a "
            "[tool.smallmodel.models] table."
        )
    return _load_pyproject(pyproject)


def _load_pyproject(pyproject: Path) -> Project:
    try:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{pyproject}: invalid TOML: {exc}. Fix the syntax at that line."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot be read: {exc}.") from exc

    tool = document.get("tool", {})
    config = tool.get("smallmodel", {}) if isinstance(tool, dict) else {}
    if not isinstance(config, dict):
        raise ConfigError(f"{pyproject}: [tool.smallmodel] must be a table.")
    unknown = sorted(set(config) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{pyproject}: unknown key(s) {', '.join(repr(k) for k in unknown)} in "
            "[tool.smallmodel]. "
            f"Valid keys: {', '.join(sorted(TOP_LEVEL_KEYS))}."
        )

    root = pyproject.parent.resolve()
    models_table = config.get("models", {})
    if not isinstance(models_table, dict):
        raise ConfigError(
            f"{pyproject}: [tool.smallmodel] models must be a table of name = {{ ... }} specs."
        )
    models = {name: _parse_spec(pyproject, name, raw) for name, raw in sorted(models_table.items())}

    settings = config.get("settings", {})
    if not isinstance(settings, dict):
        raise ConfigError(
            f"{pyproject}: [tool.smallmodel] settings must be a table, e.g. "
            "[tool.smallmodel.settings] with n_ctx = 2048."
        )
    options = _read_options(pyproject.resolve(), config)
    _check_settings(pyproject.resolve(), settings, models)

    return Project(
        root=root,
        pyproject=pyproject.resolve(),
        models=MappingProxyType(models),
        settings=MappingProxyType(settings),
        options=options,
        lock_path=root / "models.lock",
        cache_dir=_cache_dir(root, options),
    )


def _check_settings(
    pyproject: Path, settings: Mapping[str, Any], models: Mapping[str, ModelSpec]
) -> None:
    """Validate every engine setting now, so that `smallmodel lock` (and `lock --check`) reject
    a typo such as n_context as pytest would, with the same message."""
    from pytest_smallmodel.common.settings import merge_settings

    project_layer = (f"{pyproject} [tool.smallmodel.settings]", settings)
    merge_settings(project_layer)
    for name, spec in models.items():
        merge_settings(
            project_layer, (f"{pyproject} [tool.smallmodel.models.{name}] settings", spec.settings)
        )


def _read_options(pyproject: Path, config: Mapping[str, Any]) -> Options:
    """The scalar options of [tool.smallmodel], checked where the configuration is read."""
    where = f"{pyproject} [tool.smallmodel]"
    numbers = {
        key: _number(where, key, config.get(key), low, high, expected)
        for key, low, high, expected in (
            ("tolerance", *_TOLERANCE_RANGE),
            ("embedding_min_cosine", -1.0, 1.0, "a cosine similarity between -1 and 1"),
        )
    }
    directories: dict[str, str | None] = {}
    for key in ("golden_dir", "result_cache_dir", "pending_dir"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(
                f"{where} {key} = {value!r}: expected a directory path relative to the project root"
            )
        directories[key] = value
    cache_dir = config.get("cache_dir")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir):
        raise ConfigError(
            f"{pyproject}: [tool.smallmodel] cache_dir must be a non-empty string path "
            "(relative to the project root)."
        )
    return Options(
        golden_dir=directories["golden_dir"] or Options.golden_dir,
        tolerance=numbers["tolerance"],
        embedding_min_cosine=numbers["embedding_min_cosine"],
        result_cache_dir=directories["result_cache_dir"],
        cache_dir=cache_dir,
        pending_dir=directories["pending_dir"] or Options.pending_dir,
    )


_TOLERANCE_RANGE = (0.0, math.inf, "a number of nats >= 0")


def _number(
    where: str, key: str, value: object, low: float, high: float, expected: str
) -> float | None:
    """``value`` as a float within [low, high], None when unset; a ConfigError otherwise."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ConfigError(f"{where} {key} = {value!r}: expected {expected}")
    return float(value)


def _cache_dir(root: Path, options: Options) -> Path:
    from_env = os.environ.get(CACHE_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser().resolve()
    if options.cache_dir is not None:
        return (root / Path(options.cache_dir).expanduser()).resolve()
    import platformdirs  # deferred: only needed when nothing else configures the cache

    return Path(platformdirs.user_cache_dir(CACHE_APP_NAME))


def _parse_spec(pyproject: Path, name: object, raw: object) -> ModelSpec:
    where = f"{pyproject}: [tool.smallmodel.models] {name}"
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{pyproject}: invalid model name {name!r} in [tool.smallmodel.models]. "
            "Names must match "
            f"{MODEL_NAME_RE.pattern} (lowercase letters, digits, '.', '_', '-')."
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{where}: must be a table such as {{ hf = "org/repo", file = "model.gguf" }}.'
        )

    source_kinds = SOURCE_SPECS
    kinds = [kind for kind in source_kinds if kind in raw]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        raise ConfigError(
            f"{where}: a model needs exactly one source key out of {', '.join(source_kinds)} "
            f"({found})."
        )
    kind = kinds[0]
    source_kind = source_kinds[kind]
    allowed = set(source_kind.declared_keys) | NON_SOURCE_SPEC_KEYS
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)} for a {kind!r} source. "
            f"Valid keys: {', '.join(sorted(allowed))}."
        )
    missing = sorted(source_kind.required_keys - set(raw))
    if missing:
        raise ConfigError(f"{where}: a {kind!r} source also needs {', '.join(missing)}.")

    source: dict[str, str] = {}
    for key in source_kind.declared_keys:
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be a non-empty string (got {value!r}).")
        source[key] = value
    source_kind.check_spec(where, source)

    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: settings must be a table, e.g. settings = {{ n_ctx = 4096 }}.")
    embedding = raw.get("embedding", False)
    if not isinstance(embedding, bool):
        raise ConfigError(f"{where}: embedding must be true or false (got {embedding!r}).")
    chat_template = raw.get("chat_template")
    if chat_template is not None:
        if not isinstance(chat_template, str) or not chat_template:
            raise ConfigError(
                f"{where}: chat_template must be the path of a Jinja template file relative to "
                f"the project root (got {chat_template!r})."
            )
        check_relative_path(where, "chat_template", chat_template)
    serving = _parse_serving(where, raw)
    tolerance = _number(where + ":", "tolerance", raw.get("tolerance"), *_TOLERANCE_RANGE)
    return ModelSpec(
        name=name,
        kind=kind,
        source=MappingProxyType(source),
        settings=MappingProxyType(cast(dict[str, Any], settings)),
        embedding=embedding,
        chat_template=chat_template,
        serving=serving,
        tolerance=tolerance,
    )


def _parse_serving(where: str, raw: Mapping[str, Any]) -> Serving:
    server = raw.get("server")
    backend = raw.get("backend", "llama-server" if server is not None else "llama-cpp-python")
    if backend not in BACKENDS:
        raise ConfigError(
            f"{where}: backend = {backend!r} is not a backend: use one of "
            + ", ".join(repr(b) for b in BACKENDS)
            + "."
        )
    if server is not None:
        if backend != "llama-server":
            raise ConfigError(
                f'{where}: server = {server!r} needs backend = "llama-server" (a running server '
                "is not run by llama-cpp-python): remove the backend key or the server key."
            )
        if not isinstance(server, str) or not re.fullmatch(r"https?://[^/\s]+(/\S*)?", server):
            raise ConfigError(
                f"{where}: server must be the server's base URL such as "
                f'"http://gpu-box:8080" (got {server!r}).'
            )
        server = server.rstrip("/")
    api = raw.get("api", "llama-server")
    if "api" in raw and server is None:
        raise ConfigError(
            f"{where}: api = {api!r} applies to a running server only: add "
            'server = "http://HOST:PORT", or remove api (a managed llama-server is always '
            "spoken to in its own API)."
        )
    if api not in SERVER_APIS:
        raise ConfigError(
            f"{where}: api = {api!r} is not an API: use one of "
            + ", ".join(repr(a) for a in SERVER_APIS)
            + "."
        )
    return Serving(backend=backend, server=server, api=api)
