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


# The flags lines of /proc/cpuinfo as Linux 6.x prints them on these CPUs: the kernel's own
# spellings ("avx512vbmi" but "avx512_vnni"), which differ from llama.cpp's system_info names.
SAPPHIRE_RAPIDS_CPUINFO = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 cat_l2 cdp_l3 invpcid_single intel_ppin cdp_l2 ssbd mba ibrs ibpb stibp ibrs_enhanced tpr_shadow flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb intel_pt avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local split_lock_detect avx_vnni avx512_bf16 wbnoinvd dtherm ida arat pln pts hwp hwp_act_window hwp_epp hwp_pkg_req vnmi avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid bus_lock_detect cldemote movdiri movdir64b enqcmd fsrm md_clear serialize tsxldtrk pconfig arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities
"""  # noqa: E501
ZEN4_CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 9654 96-Core Processor
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good amd_lbr_v2 nopl nonstop_tsc cpuid extd_apicid aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 invpcid_single hw_pstate ssbd mba perfmon_v2 ibrs ibpb stibp ibrs_enhanced vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local avx512_bf16 clzero irperf xsaveerptr rdpru wbnoinvd amd_ppin cppc arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic v_vmsave_vmload vgif x2avic v_spec_ctrl vnmi avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid overflow_recov succor smca fsrm flush_l1d
"""  # noqa: E501
GRAVITON3_CPUINFO = """processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcp flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer	: 0x41
"""  # noqa: E501
# system_info of a native (GGML_NATIVE=ON) build on each of them.
ZEN4_NATIVE = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 |"
)
GRAVITON3_NATIVE = (
    "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | SVE = 1 | MATMUL_INT8 = 1 | "
    "SVE_CNT = 32 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)


def test_cpu_flags_are_compared_in_the_kernels_spelling_on_real_cpuinfo() -> None:
    from pytest_smallmodel.common.fingerprint import parse_cpuinfo
    from pytest_smallmodel.engine.crash import _FEATURE_FLAGS

    spr = parse_cpuinfo(SAPPHIRE_RAPIDS_CPUINFO)
    zen4 = parse_cpuinfo(ZEN4_CPUINFO)
    graviton = parse_cpuinfo(GRAVITON3_CPUINFO)
    assert spr["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert zen4["model"] == "AMD EPYC 9654 96-Core Processor"
    # A native build on the CPU it was built on uses nothing that CPU lacks.
    assert missing_cpu_features(AMX_XEON, spr["flags"]) == []
    assert missing_cpu_features(ZEN4_NATIVE, zen4["flags"]) == []
    assert missing_cpu_features(GRAVITON3_NATIVE, graviton["flags"]) == []
    # Moved to another CPU, a build names exactly what that CPU lacks.
    assert missing_cpu_features(AMX_XEON, zen4["flags"]) == ["AVX_VNNI", "AMX_INT8"]
    assert missing_cpu_features(ZEN4_NATIVE, EPYC_FLAGS) == [
        "AVX512",
        "AVX512_VBMI",
        "AVX512_VNNI",
        "AVX512_BF16",
    ]
    # Every spelling compared is one these CPUs print, and survives the fingerprint's filter.
    kept = set(spr["flags"]) | set(zen4["flags"]) | set(graviton["flags"])
    assert {flag for flag in _FEATURE_FLAGS.values() if flag not in kept} == set()
    assert {"avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni"} <= kept
