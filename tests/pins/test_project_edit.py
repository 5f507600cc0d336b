"""`calibrate --write` sets one key of [tool.smallmodel] and leaves every other byte alone."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pytest_smallmodel.common.errors import ConfigError
from pytest_smallmodel.pins.project_edit import set_smallmodel_key

MODELS = '[tool.smallmodel.models]\nm = { path = "m.gguf" }  # the model\n'


def edit(tmp_path: Path, text: str, value: float = 0.7) -> str:
    path = tmp_path / "pyproject.toml"
    path.write_bytes(text.encode())
    set_smallmodel_key(path, "tolerance", value)
    result = path.read_bytes().decode()
    assert tomllib.loads(result)["tool"]["smallmodel"]["tolerance"] == value
    return result


def test_an_existing_key_is_replaced_in_place_keeping_its_comment(tmp_path: Path) -> None:
    text = (
        '[project]\nname = "x"\n\n[tool.smallmodel]\ngolden_dir = "g"\n'
        "tolerance   = 1.0  # nats\n\n" + MODELS
    )
    assert edit(tmp_path, text) == text.replace("tolerance   = 1.0", "tolerance   = 0.7")


def test_a_missing_key_goes_under_the_existing_table(tmp_path: Path) -> None:
    text = '[tool.smallmodel]\ngolden_dir = "g"\n\n' + MODELS
    assert (
        edit(tmp_path, text) == '[tool.smallmodel]\ntolerance = 0.7\ngolden_dir = "g"\n\n' + MODELS
    )


def test_without_the_table_it_is_added_before_the_first_sub_table(tmp_path: Path) -> None:
    text = '[project]\nname = "x"\n\n' + MODELS + "\n[tool.ruff]\nline-length = 100\n"
    result = edit(tmp_path, text)
    assert result == '[project]\nname = "x"\n\n[tool.smallmodel]\ntolerance = 0.7\n\n' + MODELS + (
        "\n[tool.ruff]\nline-length = 100\n"
    )


def test_crlf_files_keep_their_line_endings(tmp_path: Path) -> None:
    text = "[tool.smallmodel]\r\ntolerance = 1.0\r\n"
    assert edit(tmp_path, text) == "[tool.smallmodel]\r\ntolerance = 0.7\r\n"


def test_a_key_set_another_way_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    text = "[tool]\nsmallmodel = { tolerance = 1.0 }\n"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"set tolerance = 0\.7 by hand"):
        set_smallmodel_key(path, "tolerance", 0.7)
    assert path.read_text() == text
