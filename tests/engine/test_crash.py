"""Crash diagnoses and the `repack = "auto"` decision, from real system_info strings and logs."""

from __future__ import annotations

import signal

import pytest

from pytest_smallmodel.common.fingerprint import decide_repack
from pytest_smallmodel.engine.crash import (
    CrashDiagnosis,
    hints_for,
    missing_cpu_features,
    signal_name,
    split_log,
)

# llama_print_system_info() of the default (native) build on the two CPUs seen so far.
AMX_XEON = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
AMD_EPYC = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
XEON_FLAGS = ["amx_bf16", "amx_int8", "amx_tile", "avx", "avx2", "avx512f", "avx512_vnni", "fma"]
EPYC_FLAGS = ["avx", "avx2", "bmi2", "f16c", "fma", "pni", "ssse3"]


def test_auto_turns_repacking_off_only_for_amx_build_on_amx_cpu() -> None:
    decision = decide_repack("auto", AMX_XEON, XEON_FLAGS)
    assert decision.enabled is False
    assert "AMX" in decision.reason and "20824" in decision.reason
    assert decide_repack("auto", AMD_EPYC, EPYC_FLAGS).enabled is True
    # A wheel with AMX kernels on a CPU without AMX never enters those kernels.
    assert decide_repack("auto", AMX_XEON, EPYC_FLAGS).enabled is True
    # The build without AMX kernels on an AMX CPU (e.g. GGML_NATIVE=OFF): nothing to avoid.
    assert decide_repack("auto", AMD_EPYC, XEON_FLAGS).enabled is True


def test_explicit_repack_wins_over_auto() -> None:
    assert decide_repack(True, AMX_XEON, XEON_FLAGS).enabled is True
    assert decide_repack(False, AMD_EPYC, EPYC_FLAGS).enabled is False


def test_missing_cpu_features_names_what_would_raise_sigill() -> None:
    assert missing_cpu_features(AMX_XEON, EPYC_FLAGS) == [
        "AVX_VNNI",
        "AVX512",
        "AVX512_VBMI",
        "AVX512_VNNI",
        "AVX512_BF16",
        "AMX_INT8",
    ]
    assert missing_cpu_features(AMD_EPYC, EPYC_FLAGS) == []
    assert missing_cpu_features(AMX_XEON, []) == []  # flags unknown: claim nothing


def test_sigill_hint_names_the_missing_features_and_the_rebuild() -> None:
    hints = hints_for(
        signal_name="SIGILL",
        cause="signal",
        system_info=AMX_XEON,
        cpu_flags=EPYC_FLAGS,
        repack=True,
        oom_killed=False,
    )
    assert len(hints) == 1
    assert "AVX512" in hints[0] and "CMAKE_ARGS=" in hints[0]
    assert "-DGGML_CPU_ALL_VARIANTS=ON" in hints[0]


def test_segfault_on_amx_with_repacking_points_at_repack_false() -> None:
    (hint,) = hints_for(
        signal_name="SIGSEGV",
        cause="signal",
        system_info=AMX_XEON,
        cpu_flags=XEON_FLAGS,
        repack=True,
        oom_killed=False,
    )
    assert "repack = false" in hint and "20824" in hint and "-DGGML_NATIVE=OFF" in hint
    assert (
        hints_for(
            signal_name="SIGSEGV",
            cause="signal",
            system_info=AMD_EPYC,
            cpu_flags=EPYC_FLAGS,
            repack=True,
            oom_killed=False,
        )
        == ()
    )


def test_sigkill_hint_tells_oom_from_unknown() -> None:
    (oom,) = hints_for(
        signal_name="SIGKILL",
        cause="signal",
        system_info=AMD_EPYC,
        cpu_flags=EPYC_FLAGS,
        repack=True,
        oom_killed=True,
    )
    assert "out-of-memory killer ended the worker" in oom
    (unknown,) = hints_for(
        signal_name="SIGKILL",
        cause="signal",
        system_info=AMD_EPYC,
        cpu_flags=EPYC_FLAGS,
        repack=True,
        oom_killed=False,
    )
    assert "dmesg" in unknown


def test_split_log_separates_llama_log_from_faulthandler() -> None:
    lines = [f"llama_context: line {i}" for i in range(30)]
    fault = [
        "Fatal Python error: Segmentation fault",
        "",
        "Current thread 0x00007f (most recent call first):",
        '  File "runtime.py", line 300 in _advance',
    ]
    tail, report = split_log("\n".join(lines + fault) + "\n")
    assert tail[-1] == "llama_context: line 29" and len(tail) == 15
    assert report[0] == "Fatal Python error: Segmentation fault"
    assert report[-1].endswith("in _advance")


def test_signal_name() -> None:
    assert signal_name(-signal.SIGSEGV) == "SIGSEGV"
    assert signal_name(-signal.SIGILL) == "SIGILL"
    assert signal_name(1) is None and signal_name(None) is None


@pytest.mark.parametrize("cause", ["signal", "timeout", "exit"])
def test_diagnosis_text_has_headline_settings_and_log(cause: str) -> None:
    diagnosis = CrashDiagnosis(
        model="smollm2@b179c952",
        call="decode",
        cause=cause,
        signal_name="SIGSEGV" if cause == "signal" else None,
        exit_code=3 if cause == "exit" else None,
        settings={"n_ctx": 2048, "repack": "auto -> True"},
        log_tail=("llama_context: n_ctx = 2048",),
        fault_report=(),
        hints=("a hint",),
        timeout=1.5 if cause == "timeout" else None,
    )
    text = diagnosis.text()
    expected = {
        "signal": "crashed with SIGSEGV",
        "timeout": "ran longer than timeout = 1.5 s",
        "exit": "exited unexpectedly (code 3)",
    }[cause]
    assert expected in text.splitlines()[0]
    assert "n_ctx=2048" in text and "hint: a hint" in text and "llama_context: n_ctx" in text
    assert "fail fast" in diagnosis.again().text()
