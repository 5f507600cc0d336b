"""Facts from a GGUF header (architecture, quantization, context length, chat template).

Only the fixed header and the key/value section are parsed, from a byte stream: the tensors are
never touched, so this works on a local file, a bytes prefix, or the first bytes of an HTTP
response (an HTTP Range read is enough to lock a Hub file without downloading its weights).
``gguf.GGUFReader`` would memory-map and index every tensor, which is needlessly slow here.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_smallmodel.common.errors import SourceError, file_error

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = frozenset({2, 3})
_READ_CHUNK = 1 << 20
# The KV section holds the tokenizer vocabulary; real models stay far below this, a corrupt length
# field does not, so it bounds how much a broken file or server can make us read.
MAX_HEADER_BYTES = 256 << 20

# GGUF value type ids -> struct format of fixed-size scalars.
_SCALAR_FORMATS: dict[int, str] = {
    0: "B",  # UINT8
    1: "b",  # INT8
    2: "H",  # UINT16
    3: "h",  # INT16
    4: "I",  # UINT32
    5: "i",  # INT32
    6: "f",  # FLOAT32
    7: "?",  # BOOL
    10: "Q",  # UINT64
    11: "q",  # INT64
    12: "d",  # FLOAT64
}
_STRING = 8
_ARRAY = 9


class GGUFFormatError(SourceError):
    """The bytes are not a readable GGUF header (wrong magic, unsupported version, truncated)."""


@dataclass(frozen=True)
class GGUFFacts:
    architecture: str | None
    file_type: str | None
    context_length: int | None
    chat_template_sha256: str | None
    header_size: int


class _Cursor:
    """Sequential reader over a pull function, keeping only a sliding window in memory."""

    def __init__(self, pull: Callable[[int], bytes], what: str) -> None:
        self._pull = pull
        self._what = what
        self._buffer = bytearray()
        self._pos = 0
        self.offset = 0
        self.endian = "<"

    def _ensure(self, count: int) -> None:
        if self.offset + count > MAX_HEADER_BYTES:
            raise GGUFFormatError(
                f"{self._what}: GGUF header claims more than {MAX_HEADER_BYTES >> 20} MiB of "
                "metadata; the file is corrupt or not a GGUF model."
            )
        while len(self._buffer) - self._pos < count:
            if self._pos > _READ_CHUNK * 4:
                del self._buffer[: self._pos]
                self._pos = 0
            chunk = self._pull(max(_READ_CHUNK, count))
            if not chunk:
                end = self.offset + len(self._buffer) - self._pos
                raise GGUFFormatError(
                    f"{self._what}: GGUF header is truncated at byte {end}; "
                    "the file is incomplete (interrupted download?). Delete it and pull it again."
                )
            self._buffer += chunk

    def take(self, count: int) -> bytes:
        self._ensure(count)
        data = bytes(self._buffer[self._pos : self._pos + count])
        self._pos += count
        self.offset += count
        return data

    def skip(self, count: int) -> None:
        while count > 0:
            step = min(count, _READ_CHUNK)
            self._ensure(step)
            self._pos += step
            self.offset += step
            count -= step

    def scalar(self, fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        self._ensure(size)
        (value,) = struct.unpack_from(self.endian + fmt, self._buffer, self._pos)
        self._pos += size
        self.offset += size
        return value  # type: ignore[no-any-return]

    def uint64(self) -> int:
        return int(self.scalar("Q"))

    def string_bytes(self) -> bytes:
        return self.take(self.uint64())


def read_facts_from_stream(pull: Callable[[int], bytes], what: str) -> GGUFFacts:
    """Parse the header, pulling bytes on demand (``pull(n)``: up to n bytes, b"" at EOF)."""
    cursor = _Cursor(pull, what)
    magic = cursor.take(4)
    if magic != GGUF_MAGIC:
        raise GGUFFormatError(
            f"{what}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}). "
            "Point the spec at a .gguf model file."
        )
    version = int(cursor.scalar("I"))
    if version & 0xFFFF == 0 and version > 0xFFFF:
        # A big-endian GGUF: the version reads byte-swapped.
        cursor.endian = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(
            f"{what}: GGUF version {version} is not supported (supported: "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}). Re-convert the model with a "
            "recent llama.cpp."
        )
    cursor.uint64()  # tensor count: tensors are never read
    kv_count = cursor.uint64()

    architecture: str | None = None
    file_type_id: int | None = None
    context_lengths: dict[str, int] = {}
    chat_template_sha256: str | None = None
    for _ in range(kv_count):
        key = cursor.string_bytes().decode("utf-8", errors="replace")
        value_type = int(cursor.scalar("I"))
        if key == "general.architecture" and value_type == _STRING:
            architecture = cursor.string_bytes().decode("utf-8", errors="replace")
        elif key == "tokenizer.chat_template" and value_type == _STRING:
            chat_template_sha256 = hashlib.sha256(cursor.take(cursor.uint64())).hexdigest()
        elif key == "general.file_type" and value_type in _SCALAR_FORMATS:
            file_type_id = int(cursor.scalar(_SCALAR_FORMATS[value_type]))
        elif key.endswith(".context_length") and value_type in _SCALAR_FORMATS:
            context_lengths[key] = int(cursor.scalar(_SCALAR_FORMATS[value_type]))
        else:
            _skip_value(cursor, value_type, what)

    context_length = None
    if architecture is not None:
        context_length = context_lengths.get(f"{architecture}.context_length")
    return GGUFFacts(
        architecture=architecture,
        file_type=None if file_type_id is None else file_type_name(file_type_id),
        context_length=context_length,
        chat_template_sha256=chat_template_sha256,
        header_size=cursor.offset,
    )


def _skip_value(cursor: _Cursor, value_type: int, what: str) -> None:
    if value_type in _SCALAR_FORMATS:
        cursor.skip(struct.calcsize(_SCALAR_FORMATS[value_type]))
    elif value_type == _STRING:
        cursor.skip(cursor.uint64())
    elif value_type == _ARRAY:
        item_type = int(cursor.scalar("I"))
        count = cursor.uint64()
        if item_type in _SCALAR_FORMATS:
            cursor.skip(count * struct.calcsize(_SCALAR_FORMATS[item_type]))
        else:
            for _ in range(count):
                _skip_value(cursor, item_type, what)
    else:
        raise GGUFFormatError(
            f"{what}: unknown GGUF value type {value_type} at byte {cursor.offset}; "
            "the file is corrupt or written by an unsupported GGUF version."
        )


def file_type_name(file_type_id: int) -> str:
    """llama.cpp's name for a ``general.file_type`` id, e.g. 3 -> "MOSTLY_Q4_1"."""
    import gguf  # deferred: importing gguf pulls in numpy, which the CLI rarely needs

    try:
        return str(gguf.LlamaFileType(file_type_id).name)
    except ValueError:
        return f"UNKNOWN_{file_type_id}"


def read_facts(path: Path) -> GGUFFacts:
    """Header facts of a local GGUF file, reading only its metadata."""
    try:
        with open(path, "rb", buffering=0) as handle:
            return read_facts_from_stream(handle.read, str(path))
    except OSError as exc:
        raise file_error("read the GGUF header of", Path(path), exc) from None


def parse_facts(prefix: bytes, what: str = "<bytes>") -> GGUFFacts:
    """Header facts from the first bytes of a GGUF file (GGUFFormatError if too short)."""
    view = memoryview(prefix)
    position = 0

    def pull(count: int) -> bytes:
        nonlocal position
        chunk = bytes(view[position : position + count])
        position += len(chunk)
        return chunk

    return read_facts_from_stream(pull, what)


def is_gguf(path: Path) -> bool:
    """Cheap check of the magic bytes; False for missing or unreadable files."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False
