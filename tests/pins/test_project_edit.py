"""`calibrate --write` sets one key of one model's spec and leaves every other byte alone."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pytest_smallmodel.common.errors import ConfigError
from pytest_smallmodel.pins.project_edit import set_model_key

HEAD = '[project]\nname = "x"\n\n[tool.smallmodel]\ntolerance = 1.0  # nats\n\n'


def edit(tmp_path: Path, text: str, model: str = "m", value: float = 0.7) -> str:
    path = tmp_path / "pyproject.toml"
    path.write_bytes(text.encode())
    set_model_key(path, model, "tolerance", value)
    result = path.read_bytes().decode()
    data = tomllib.loads(result)["tool"]["smallmodel"]
    assert data["models"][model]["tolerance"] == value
    assert data.get("tolerance") == tomllib.loads(text)["tool"]["smallmodel"].get("tolerance")
    return result


def test_the_key_is_added_inside_a_one_line_inline_table_keeping_its_comment(
    tmp_path: Path,
) -> None:
    text = (
        HEAD
        + '[tool.smallmodel.models]\nm = { path = "m.gguf" }  # the model\nn = { path = "n" }\n'
    )
    assert edit(tmp_path, text) == text.replace(
        '{ path = "m.gguf" }', '{ path = "m.gguf", tolerance = 0.7 }'
    )


def test_an_existing_key_is_replaced_in_place(tmp_path: Path) -> None:
    text = HEAD + '[tool.smallmodel.models]\nm = { tolerance = 1.5, path = "m.gguf" }\n'
    assert edit(tmp_path, text) == text.replace("tolerance = 1.5", "tolerance = 0.7")


def test_only_the_named_model_changes_even_when_another_name_contains_it(
    tmp_path: Path,
) -> None:
    text = HEAD + '[tool.smallmodel.models]\nmm = { path = "mm" }\nm = { path = "m" }\n'
    assert edit(tmp_path, text) == text.replace(
        'm = { path = "m" }', 'm = { path = "m", tolerance = 0.7 }'
    )


def test_a_model_table_gets_the_line_under_its_header(tmp_path: Path) -> None:
    text = HEAD + '[tool.smallmodel.models."qwen2.5"]\npath = "q.gguf"\n\n[tool.ruff]\nx = 1\n'
    assert edit(tmp_path, text, model="qwen2.5") == text.replace(
        '"qwen2.5"]\n', '"qwen2.5"]\ntolerance = 0.7\n'
    )
    again = edit(tmp_path, text.replace('"qwen2.5"]\n', '"qwen2.5"]\ntolerance = 2\n'), "qwen2.5")
    assert "tolerance = 0.7\npath" in again and "tolerance = 2" not in again


def test_crlf_files_keep_their_line_endings(tmp_path: Path) -> None:
    text = '[tool.smallmodel.models.m]\r\npath = "m"\r\n'
    assert edit(tmp_path, text) == '[tool.smallmodel.models.m]\r\ntolerance = 0.7\r\npath = "m"\r\n'


@pytest.mark.parametrize(
    "text",
    [
        '[tool.smallmodel]\nmodels.m = { path = "m" }\n',  # a dotted key
        '[tool.smallmodel.models]\nother = { path = "m" }\n',  # no such model
    ],
    ids=["dotted key", "undeclared"],
)
def test_a_spec_this_edit_cannot_place_is_refused_and_nothing_is_written(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"add tolerance = 0\.7 to its spec by hand"):
        set_model_key(path, "m", "tolerance", 0.7)
    assert path.read_text() == text
