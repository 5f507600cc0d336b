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
