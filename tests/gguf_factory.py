"""Write tiny, real GGUF files (random weights) so tests exercise true header facts."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}<|assistant|>"
)


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    chat_template: str | None = None,
    context_length: int = 128,
    architecture: str = "llama",
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.ALL_F32,
    n_tensors: int = 2,
    tensor_elements: int = 64,
    vocab_size: int = 32,
) -> Path:
    """Write a small GGUF whose bytes depend only on the arguments (``seed`` varies the weights).

    The metadata is real (architecture, context length, file type, optional chat template, a toy
    vocabulary) but the file is not a loadable model: it is for header and hashing tests.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), architecture)
    try:
        writer.add_name(f"tiny-{architecture}-{seed}")
        writer.add_context_length(context_length)
        writer.add_embedding_length(tensor_elements)
        writer.add_block_count(1)
        writer.add_file_type(int(file_type))
        writer.add_tokenizer_model("llama")
        writer.add_token_list([f"tok{i}".encode() for i in range(vocab_size)])
        writer.add_token_scores([0.0] * vocab_size)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        for index in range(n_tensors):
            weights = rng.standard_normal(tensor_elements).astype(np.float32)
            writer.add_tensor(f"blk.0.weight_{index}", weights)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def copy_gguf(
    source: Path,
    target: Path,
    *,
    remove: tuple[str, ...] = (),
    replace_tensors: dict[str, float] | None = None,
) -> Path:
    """Rewrite a real GGUF with the gguf package: drop metadata keys, or fill F32 tensors.

    ``replace_tensors`` maps a tensor name to a value written into every element (for example
    ``{"output_norm.weight": float("nan")}`` makes a model whose logits are NaN).
    """
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(target), arch=_field(reader, "general.architecture"))
    alignment = _field(reader, "general.alignment")
    if alignment is not None:
        writer.data_alignment = alignment
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        if field.name in remove:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    fills = replace_tensors or {}
    tensors = []
    for tensor in reader.tensors:
        data = tensor.data
        if tensor.name in fills:
            if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
                raise ValueError(f"{tensor.name} is not F32")
            data = np.full_like(data, fills[tensor.name])
        tensors.append(data)
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    return target


def _field(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    return field.contents() if field else None
