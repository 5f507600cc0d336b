"""The kinds of source behind one interface: registry, lock schema, descriptions, key order."""

from __future__ import annotations

from pytest_smallmodel.pins.lockfile import Lock, LockedModel, lock_schema, render_lock
from pytest_smallmodel.pins.source_specs import SOURCE_SPECS
from pytest_smallmodel.pins.sources import KINDS

SHA = "0123456789abcdef" * 4
COMMIT = "89abcdef" * 5

# One pin of each kind, its source keys deliberately out of order.
PINS = {
    "hf": LockedModel(
        "h",
        SHA,
        1,
        {
            "filename": "a.gguf",
            "commit": COMMIT,
            "revision": "main",
            "file": "*.gguf",
            "hf": "o/r",
        },
    ),
    "url": LockedModel("u", SHA, 1, {"sha256": SHA, "url": "https://x/y.gguf"}),
    "path": LockedModel("p", SHA, 1, {"path": "models/p.gguf"}),
    "package": LockedModel("k", SHA, 1, {"version": "1.0", "file": "k/x.gguf", "package": "k"}),
}


def test_every_kind_is_registered_under_its_key_and_in_the_lock_schema() -> None:
    schema = lock_schema()
    source_schema = schema["$defs"]["model"]["properties"]["source"]
    assert [choice["required"] for choice in source_schema["oneOf"]] == [[k] for k in KINDS]
    assert list(KINDS) == list(SOURCE_SPECS)
    for key, kind in KINDS.items():
        assert kind.kind == key and kind.spec.declared_keys[0] == key
        assert kind.spec.required_keys <= set(kind.spec.declared_keys)
        part = schema["$defs"][f"{key}_source"]
        assert set(part["properties"]) == {*kind.spec.declared_keys, *kind.spec.resolved_keys}
        assert {*kind.spec.required_keys, *kind.spec.resolved_keys} <= set(part["required"])


def test_each_pin_knows_its_kind_and_describes_itself() -> None:
    assert {kind: pin.kind for kind, pin in PINS.items()} == {kind: kind for kind in PINS}
    assert [pin.describe_source() for pin in PINS.values()] == [
        f"hf:o/r@{COMMIT[:7]}/a.gguf",
        "url:https://x/y.gguf",
        "path:models/p.gguf",
        "package:k==1.0/k/x.gguf",
    ]
    assert PINS["hf"].declared_source() == {"hf": "o/r", "file": "*.gguf", "revision": "main"}
    assert PINS["package"].declared_source() == {"package": "k", "file": "k/x.gguf"}


def test_source_keys_are_written_kind_first_then_declared_then_resolved() -> None:
    text = render_lock(Lock(1, {pin.name: pin for pin in PINS.values()}))
    sources = [block.split("\n\n")[0].rstrip("\n") for block in text.split("[model.source]\n")[1:]]
    assert sources == [
        f'hf = "o/r"\nfile = "*.gguf"\nrevision = "main"\ncommit = "{COMMIT}"\nfilename = "a.gguf"',
        'package = "k"\nfile = "k/x.gguf"\nversion = "1.0"',
        'path = "models/p.gguf"',
        f'url = "https://x/y.gguf"\nsha256 = "{SHA}"',
    ]
