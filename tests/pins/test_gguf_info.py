from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import pytest
from gguf_factory import DEFAULT_CHAT_TEMPLATE, write_tiny_gguf

from pytest_smallmodel.pins.gguf_info import GGUFFormatError, is_gguf, parse_facts, read_facts


def test_facts_of_a_real_file(tiny_gguf: Path) -> None:
    facts = read_facts(tiny_gguf)
    assert facts.architecture == "llama"
    assert facts.context_length == 128
    assert facts.file_type == "ALL_F32"
    assert facts.chat_template_sha256 == hashlib.sha256(DEFAULT_CHAT_TEMPLATE.encode()).hexdigest()
    assert 0 < facts.header_size < tiny_gguf.stat().st_size


def test_facts_agree_with_gguf_reader(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "q.gguf", context_length=4096, file_type=gguf.LlamaFileType.MOSTLY_Q4_1
    )
    reader = gguf.GGUFReader(path)
    ctx = reader.fields["llama.context_length"]
    facts = read_facts(path)
    assert facts.context_length == int(ctx.parts[ctx.data[0]][0]) == 4096
    assert facts.file_type == "MOSTLY_Q4_1"
    assert facts.chat_template_sha256 is None


def test_prefix_is_enough(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()
    facts = read_facts(tiny_gguf)
    assert parse_facts(data[: facts.header_size]) == facts


def test_truncated_header(tiny_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:100])
    assert is_gguf(cut)
    with pytest.raises(GGUFFormatError, match="truncated"):
        read_facts(cut)


def test_not_gguf(tmp_path: Path) -> None:
    other = tmp_path / "model.bin"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    assert not is_gguf(other)
    assert not is_gguf(tmp_path / "missing.gguf")
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        read_facts(other)


def test_unsupported_version(tiny_gguf: Path) -> None:
    data = bytearray(tiny_gguf.read_bytes())
    data[4:8] = (1).to_bytes(4, "little")
    with pytest.raises(GGUFFormatError, match="version 1"):
        parse_facts(bytes(data))


def test_corrupt_length_is_bounded(tiny_gguf: Path) -> None:
    data = bytearray(tiny_gguf.read_bytes())
    data[16:24] = (2**40).to_bytes(8, "little")  # kv count
    data[24:32] = (2**40).to_bytes(8, "little")  # first key length
    with pytest.raises(GGUFFormatError):
        parse_facts(bytes(data))
