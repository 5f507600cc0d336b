"""What `repack = false` costs: decode and prompt speed with weight repacking off versus on.

`repack = "auto"` turns repacking off only on CPUs with AMX running a build with AMX kernels
(where those kernels crash). This measures the price of that choice, or of setting
`repack = false` by hand, on the machine at hand: the same 40 prompts x 32 tokens through one
engine worker per variant, variants alternated, medians of tokens per second.

Run: python benchmarks/bench_repack.py [--repeat N].
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from suite import MAX_TOKENS, PROMPTS, machine, smollm2_path

from pytest_smallmodel.common.settings import LoadSpec, merge_settings
from pytest_smallmodel.engine.backend import Decoding
from pytest_smallmodel.engine.worker.parent import WorkerModel

SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def run(model: WorkerModel) -> tuple[float, float]:
    """(decode tokens/s, prompt tokens/s) over the whole prompt set."""
    generated = decode_ms = prompt_tokens = prompt_ms = 0.0
    for prompt in PROMPTS:
        tokens = model.tokenize(prompt)
        _, _, timings = model.decode(tokens, Decoding(max_tokens=MAX_TOKENS, top_k=5))
        generated += timings.generated_tokens
        decode_ms += timings.decode_ms
        prompt_tokens += len(tokens)
        prompt_ms += timings.prompt_ms
    return generated / (decode_ms / 1000), prompt_tokens / (prompt_ms / 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="another GGUF (default: SmolLM2 Q4_1, whose Q4_1 weights this llama.cpp build does "
        "not repack: same speed and tokens either way; a Q4_0 copy shows the effect)",
    )
    args = parser.parse_args()
    path = args.model or smollm2_path()
    models = {
        repack: WorkerModel(
            LoadSpec(
                name="smollm2",
                path=path,
                sha256=SHA256,
                settings=merge_settings(("bench", {"repack": repack})),
                embedding=False,
            )
        )
        for repack in (True, False)
    }
    print(f"model: {path}")
    print(f"machine: {machine()}; system_info: {models[True].fingerprint['system_info']}")
    for repack, model in models.items():
        print(
            f"  repack={repack}: effective {model.info.repack.enabled} ({model.info.repack.reason})"
        )
    samples: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    started = time.perf_counter()
    for _ in range(args.repeat):
        for repack, model in models.items():  # alternate: drift of the machine hits both
            samples[repack].append(run(model))
    for model in models.values():
        model.close()
    medians = {
        repack: (
            statistics.median(s[0] for s in values),
            statistics.median(s[1] for s in values),
        )
        for repack, values in samples.items()
    }
    for repack, (decode, prompt) in medians.items():
        print(
            f"  repack={repack!s:<5}  decode {decode:7.1f} tokens/s   prompt {prompt:8.1f} tokens/s"
        )
    decode_ratio = medians[False][0] / medians[True][0]
    prompt_ratio = medians[False][1] / medians[True][1]
    print(f"repack=false / repack=true: decode {decode_ratio:.3f}, prompt {prompt_ratio:.3f}")
    print(f"({args.repeat} rounds in {time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
