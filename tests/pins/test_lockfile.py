from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from pytest_smallmodel.common.errors import LockError
from pytest_smallmodel.pins.lockfile import (
    LOCK_HEADER,
    Lock,
    LockedModel,
    lock_schema,
    read_lock,
    render_lock,
    write_lock,
)

SHA = "0123456789abcdef" * 4
COMMIT = "89abcdef" * 5


def sample_lock() -> Lock:
    return Lock(
        1,
        {
            "zeta": LockedModel("zeta", SHA, 10, {"path": "models/z.gguf"}),
            "alpha": LockedModel(
                "alpha",
                SHA,
                1234,
                {
                    "hf": "o/r",
                    "file": "*.gguf",
                    "revision": "main",
                    "commit": COMMIT,
                    "filename": "a.gguf",
                },
                architecture="llama",
                file_type="MOSTLY_Q4_1",
                context_length=2048,
                chat_template_sha256=SHA,
            ),
            "pkg": LockedModel(
                "pkg", SHA, 5, {"package": "p", "file": "p/x.gguf", "version": "1.0"}
            ),
            "web": LockedModel("web", SHA, 5, {"url": "https://x/y.gguf"}),
        },
    )


def test_round_trip_sorted_and_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "models.lock"
    write_lock(path, sample_lock())
    first = path.read_bytes()
    assert first.decode().startswith(LOCK_HEADER)
    lock = read_lock(path)
    assert list(lock.models) == ["alpha", "pkg", "web", "zeta"]
    assert lock.models["alpha"] == sample_lock().models["alpha"]
    assert lock.models["alpha"].short_sha == SHA[:8]
    write_lock(path, lock)
    assert path.read_bytes() == first
    text = first.decode()
    assert text.index('name = "alpha"') < text.index('name = "zeta"')


def test_schema_is_valid_and_shipped() -> None:
    jsonschema.Draft202012Validator.check_schema(lock_schema())
    packaged = Path(__file__).parents[2] / "pytest_smallmodel" / "lock.schema.json"
    assert json.loads(packaged.read_text()) == lock_schema()


def edited(tmp_path: Path, old: str, new: str, count: int = 1) -> str:
    path = tmp_path / "models.lock"
    path.write_text(render_lock(sample_lock()).replace(old, new, count))
    with pytest.raises(LockError) as info:
        read_lock(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            f'sha256 = "{SHA}"\nsize = 1234',
            f'sha256 = "{SHA[:-1]}"\nsize = 1234',
            "model 'alpha' field sha256",
        ),
        (
            f'sha256 = "{SHA}"\nsize = 1234',
            f'sha256 = "{SHA[:-1]}g"\nsize = 1234',
            "is not a sha256",
        ),
        ("size = 1234", 'size = "big"', "model 'alpha' field size"),
        ("size = 1234", "size = -1", "model 'alpha' field size"),
        (f'commit = "{COMMIT}"', 'commit = "main"', "field source.commit"),
        ('file_type = "MOSTLY_Q4_1"', 'file_type = "x"\ncolour = "red"', "'colour' was unexpected"),
        ('version = "1.0"', "", "model 'pkg' field source"),
        ('name = "zeta"', 'name = "Zeta"', "field name"),
        ("version = 1", "version = 0", "field version"),
        ("version = 1", "version = 2", "written by a newer pytest-smallmodel (lock format 2"),
    ],
)
def test_hand_edited_lock_names_model_and_field(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert expected in edited(tmp_path, old, new)


def test_duplicate_names_in_lock(tmp_path: Path) -> None:
    message = edited(tmp_path, 'name = "zeta"', 'name = "web"')
    assert "'web' is listed twice" in message


def test_toml_error_in_lock(tmp_path: Path) -> None:
    message = edited(tmp_path, "version = 1", "version = = 1")
    assert "invalid TOML" in message and "line" in message


def test_missing_lock(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="smallmodel lock"):
        read_lock(tmp_path / "models.lock")


def test_empty_lock(tmp_path: Path) -> None:
    path = tmp_path / "models.lock"
    write_lock(path, Lock(1))
    assert read_lock(path).models == {}


def test_a_lock_text_that_passed_the_schema_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions read models.lock every time: the schema check (jsonschema) runs once per text."""
    path = tmp_path / "models.lock"
    write_lock(path, sample_lock())
    remembered = tmp_path / "validated"
    assert read_lock(path, validated_dir=remembered) == sample_lock()
    assert len(list(remembered.iterdir())) == 1

    import pytest_smallmodel.pins.lockfile as lockfile

    def no_check(*args: object) -> None:
        raise AssertionError("validated again")

    monkeypatch.setattr(lockfile, "_validate", no_check)
    assert read_lock(path, validated_dir=remembered) == sample_lock()
    monkeypatch.undo()
    # Another text is checked: a broken one fails and is never remembered.
    path.write_text(path.read_text().replace(SHA, "not-a-sha", 1))
    with pytest.raises(LockError, match="not a sha256"):
        read_lock(path, validated_dir=remembered)
    with pytest.raises(LockError, match="not a sha256"):
        read_lock(path, validated_dir=remembered)
    assert len(list(remembered.iterdir())) == 1
