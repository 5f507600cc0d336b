from __future__ import annotations

import pytest

from pytest_smallmodel.common.errors import ConfigError
from pytest_smallmodel.common.settings import EngineSettings, default_threads, merge_settings


def test_defaults_are_fixed_values() -> None:
    settings = merge_settings()
    assert settings == EngineSettings()
    assert settings.numeric() == {
        "n_ctx": 2048,
        "n_batch": 512,
        "n_ubatch": 512,
        "flash_attn": False,
        "type_k": "f16",
        "type_v": "f16",
        "n_gpu_layers": 0,
        "seed": 0,
        "swa_full": True,
    }
    assert (settings.repack, settings.timeout) == ("auto", 600.0)


def test_later_layers_win() -> None:
    settings = merge_settings(
        ("pyproject", {"n_ctx": 4096, "top_logprobs": 3}),
        ("spec", {"n_ctx": 1024}),
        ("marker", {"flash_attn": True}),
    )
    assert (settings.n_ctx, settings.top_logprobs, settings.flash_attn) == (1024, 3, True)


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        merge_settings(("test_x.py::test_a @pytest.mark.model(...)", {"n_kxt": 1}))
    message = str(error.value)
    assert "test_x.py::test_a" in message
    assert "n_kxt" in message
    assert "n_ctx" in message and "flash_attn" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_ctx", "big"),
        ("n_ctx", 4),
        ("flash_attn", 1),
        ("type_k", "q3"),
        ("n_threads", 0),
        ("swa_full", "yes"),
    ],
)
def test_invalid_values_are_named(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        merge_settings(("pyproject.toml", {name: value}))


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("repack", "on", '"auto", true or false'),
        ("repack", 1, '"auto", true or false'),
        ("timeout", 0, "a number of seconds > 0"),
        ("timeout", -5, "a number of seconds > 0"),
        ("timeout", "10", "a number of seconds > 0"),
    ],
)
def test_invalid_repack_and_timeout_list_valid_values(
    name: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        merge_settings(("pyproject.toml [tool.smallmodel.settings]", {name: value}))
    assert f"setting {name!r} = {value!r} is invalid: expected {expected}" in str(error.value)


def test_repack_and_timeout_stay_out_of_the_request() -> None:
    settings = merge_settings(("x", {"repack": False, "timeout": 5}))
    assert "repack" not in settings.numeric() and "timeout" not in settings.numeric()
    assert settings.timeout == 5.0
    # The timeout bounds calls; it does not need another loaded model.
    assert settings.load_key() == merge_settings(("x", {"repack": False})).load_key()


def test_batch_never_exceeds_context() -> None:
    settings = merge_settings(("x", {"n_ctx": 256}))
    assert settings.n_batch == 256 and settings.n_ubatch == 256


def test_threads_do_not_enter_numeric_settings() -> None:
    assert "n_threads" not in merge_settings(("x", {"n_threads": 3})).numeric()


def test_threads_divide_cores_among_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMALLMODEL_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    assert default_threads() == 2
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "16")
    assert default_threads() == 1
    monkeypatch.setenv("SMALLMODEL_THREADS", "5")
    assert default_threads() == 5
