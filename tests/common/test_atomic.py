"""Atomic writes replace only regular files: devices, FIFOs and /dev/stdout-like links are written
to, directories and sockets refused; modes follow the umask (new) or the file (rewritten)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_smallmodel.common.atomic import atomic_write_text, check_writable
from pytest_smallmodel.common.errors import FileSystemError

ROOT = os.geteuid() == 0


@pytest.fixture
def devices(tmp_path: Path) -> tuple[Path, Path]:
    """A null and a full character device. As root, new nodes in tmp_path: a test that fails
    must not be able to replace the machine's own /dev/null. Otherwise the system's, which a
    user cannot replace anyway (/dev is not writable)."""
    if not ROOT:
        return Path("/dev/null"), Path("/dev/full")
    null, full = tmp_path / "null", tmp_path / "full"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    return null, full


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_character_device_is_written_to_not_replaced(devices: tuple[Path, Path]) -> None:
    null, full = devices
    atomic_write_text(null, "{}\n")
    assert stat.S_ISCHR(null.stat().st_mode)
    with pytest.raises(FileSystemError, match="no space left on the device") as error:
        atomic_write_text(full, "{}\n" * 10_000)
    assert str(full) in str(error.value)
    assert stat.S_ISCHR(full.stat().st_mode)  # still the device, not a JSON file
    check_writable(null)
    assert not [p for p in null.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_link_to_an_open_descriptor_reaches_the_descriptor(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{write_end}")  # what /dev/stdout is
    try:
        atomic_write_text(link, "through the pipe\n")
        os.close(write_end)
        assert os.read(read_end, 100) == b"through the pipe\n"
    finally:
        os.close(read_end)
    assert link.is_symlink()


def test_stdout_redirected_to_a_file_keeps_the_redirection(tmp_path: Path) -> None:
    """`pytest --smallmodel-report-json=/dev/stdout > out.json`, in a process of its own.

    Through a link of our own, made like /dev/stdout: a failing run must not be able to replace
    the machine's /dev/stdout (as root it could)."""
    out = tmp_path / "out.json"
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")
    code = (
        "import sys; from pathlib import Path; "
        "from pytest_smallmodel.common.atomic import atomic_write_text; "
        "print('first', flush=True); atomic_write_text(Path(sys.argv[1]), '{\"a\": 1}\\n')"
    )
    with out.open("wb") as handle:
        subprocess.run([sys.executable, "-c", code, str(stdout)], stdout=handle, check=True)
    assert out.read_text() == 'first\n{"a": 1}\n'
    assert stdout.is_symlink()


def test_a_fifo_is_written_to(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write_text(fifo, "to the reader\n")
    reader.join(timeout=10)
    assert received == [b"to the reader\n"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_directories_and_sockets_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "report.json"
    directory.mkdir()
    with pytest.raises(FileSystemError, match="it is a directory"):
        atomic_write_text(directory, "{}")
    address = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(address))
    try:
        for attempt in (atomic_write_text, check_writable):
            with pytest.raises(FileSystemError, match="it is a socket, not a file") as error:
                attempt(address, "{}") if attempt is atomic_write_text else attempt(address)
            assert str(address) in str(error.value)
        assert stat.S_ISSOCK(address.stat().st_mode)
    finally:
        server.close()


def test_new_files_follow_the_umask_and_rewritten_files_keep_their_mode(
    tmp_path: Path, umask_027: None
) -> None:
    new = tmp_path / "new.json"
    atomic_write_text(new, "{}")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    shared = tmp_path / "shared.json"
    shared.write_text("{}")
    shared.chmod(0o664)
    atomic_write_text(shared, '{"b": 2}')
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664
    assert json.loads(shared.read_text()) == {"b": 2}


def test_a_link_to_a_regular_file_replaces_the_file_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, '{"c": 3}')
    assert link.is_symlink() and json.loads(target.read_text()) == {"c": 3}
