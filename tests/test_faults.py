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
from click.testing import CliRunner, Result
from gguf_factory import write_tiny_gguf
from hub_server import FakeHub, Fault

from pytest_smallmodel.cli import main

MakeProject = Callable[..., Path]
SMALLMODEL = [sys.executable, "-m", "pytest_smallmodel.cli"]


def run(root: Path, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--project", str(root), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


def one_error(result: Result) -> str:
    """The single error message of a failed command (no traceback, no second error)."""
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# -- tmpfs -----------------------------------------------------------------------------------------


def _mount(*args: str) -> str | None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


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


def test_full_disk_while_writing_the_lock_or_a_download_says_so(
    hub: FakeHub, make_project: MakeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = write_tiny_gguf(tmp_path / "big.gguf", tensor_elements=64 * 1024).read_bytes()
    url = hub.add_url_file("big.gguf", big)
    cache = tmpfs(tmp_path / "cache-disk", "64k")
    with cache as cache_dir:
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
        assert output.count(f"cannot write {golden_file}: no space left on the device") == 2
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
    local = write_tiny_gguf(root / "local.gguf", seed=1)

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

    # A read-only project directory: lock fails before resolving anything.
    with tmpfs(tmp_path / "ro", "1m") as disk:
        shutil.copytree(root, disk / "project")
        remount_read_only(disk)
        result = run(disk / "project", "lock", "--upgrade")
        assert result.exit_code == 2, result.output
        message = one_error(result)
        assert f"cannot write {disk / 'project' / 'models.lock'}" in message
        assert "the file system is read-only" in message
        assert "pinned" not in result.output

    # A model file this user may not read: run without the capabilities that let root read it.
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is missing: cannot drop the capabilities that let root read anything")
    local.chmod(0)
    drop = "-dac_override,-dac_read_search"
    setpriv = ["setpriv", "--bounding-set", drop, "--inh-caps", drop]
    done = subprocess.run(
        [*setpriv, *SMALLMODEL, "--project", str(root), "verify", "local"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot read model 'local' at {local}: permission denied" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1


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
