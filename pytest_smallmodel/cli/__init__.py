"""``smallmodel``: lock, pull, verify and list the project's pinned model files; ``doctor``;
review pending goldens (``review``) and replay one model's goldens on another (``compare``).

Exit codes: 0 ok, 1 a check failed (mismatch, missing file, stale lock, download failure),
2 usage, configuration or file-system error (full disk, read-only, permissions). Expected errors
print one message to stderr, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from pytest_smallmodel.common.errors import ConfigError, LockError, SmallModelError, SourceError
from pytest_smallmodel.goldens import orphans as orphans_core
from pytest_smallmodel.goldens import review as review_core
from pytest_smallmodel.pins.chat_template import template_change
from pytest_smallmodel.pins.lockfile import (
    LOCK_VERSION,
    Lock,
    LockedModel,
    read_lock,
)
from pytest_smallmodel.pins.project import ModelSpec, Project, load_project


class _Group(click.Group):
    """Turns SmallModelError into its message on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SmallModelError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group)
@click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, dir_okay=True, path_type=Path),
    default=None,
    help="Project directory (default: search upward from the current directory).",
)
@click.pass_context
def main(ctx: click.Context, project_dir: Path | None) -> None:
    """Pin, download and verify the GGUF models declared in pyproject.toml."""
    ctx.obj = project_dir


def _project(ctx: click.Context) -> Project:
    start: Path | None = ctx.find_root().obj
    if start is not None and not start.is_dir():
        raise ConfigError(f"--project {start}: no such directory.")
    return load_project(start)


def _check_names(project: Project, names: Iterable[str]) -> list[str]:
    unknown = [name for name in names if name not in project.models]
    if unknown:
        declared = ", ".join(sorted(project.models)) or "(none)"
        raise ConfigError(
            f"{project.pyproject}: no model named {', '.join(map(repr, unknown))} in "
            f"[tool.smallmodel.models]. Declared models: {declared}."
        )
    return sorted(set(names)) if names else sorted(project.models)


# --------------------------------------------------------------------------------------------


@main.command()
@click.argument("names", nargs=-1)
@click.option(
    "--upgrade",
    is_flag=True,
    help="Re-resolve moving parts (hf revisions, url contents, package versions, files "
    "at path) of all models, or only of NAMES when given.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 with a summary when models.lock is missing or does not "
    "match the specs (for CI).",
)
@click.pass_context
def lock(ctx: click.Context, names: tuple[str, ...], upgrade: bool, check: bool) -> None:
    """Resolve the model specs and write models.lock."""
    if check and upgrade:
        raise click.UsageError("--check and --upgrade cannot be combined: --check writes nothing.")
    project = _project(ctx)
    targets = _check_names(project, names)
    if check:
        _lock_check(project, targets, check_removed=not names)
        return

    from pytest_smallmodel.pins.lock_update import IgnoredLock, LockEvent, update_lock

    def show(event: LockEvent) -> None:
        if isinstance(event, IgnoredLock):
            click.echo(
                f"warning: ignoring the existing lock and re-resolving all pins: {event.error}",
                err=True,
            )
        else:
            verb = "pinned" if event.changed else "unchanged"
            click.echo(f"{event.name}: {verb} {event.pin.short_sha} {event.pin.describe_source()}")

    update = update_lock(project, targets, upgrade=upgrade, progress=True, on_event=show)
    if not update.written:
        for message in update.failures:
            click.echo(f"error: {message}", err=True)
        click.echo(
            f"{update.lock_path} was not written: fix the error(s) above and run "
            "`smallmodel lock` again.",
            err=True,
        )
        ctx.exit(1)
    count = len(update.pins)
    click.echo(f"wrote {update.lock_path} ({count} model{'s' if count != 1 else ''})")


def _lock_check(project: Project, targets: Sequence[str], *, check_removed: bool) -> None:
    from pytest_smallmodel.pins.lock_update import check_lock

    ctx = click.get_current_context()
    result = check_lock(project, targets, check_removed=check_removed)
    fix = f"Run `smallmodel lock` in {project.root} and commit models.lock."
    if result.missing:
        click.echo(f"{result.lock_path} is missing. {fix}", err=True)
        ctx.exit(1)
    if result.unreadable is not None:
        click.echo(result.unreadable, err=True)
        ctx.exit(1)
    if result.stale:
        click.echo(f"{result.lock_path} does not match the specs:", err=True)
        for reason in result.stale:
            click.echo(f"  {reason}", err=True)
        click.echo(fix, err=True)
        ctx.exit(1)
    plural = "s" if result.checked != 1 else ""
    click.echo(f"{result.lock_path} is up to date ({result.checked} model{plural} checked).")


def _locked_targets(project: Project, names: Sequence[str]) -> tuple[Lock, list[LockedModel]]:
    """The pins to act on; warnings for pins that no longer match their spec."""
    lock = read_lock(project.lock_path)
    targets = _check_names(project, names)
    missing = [name for name in targets if name not in lock.models]
    if names and missing:
        raise LockError(
            f"{project.lock_path}: {', '.join(map(repr, missing))} not locked. Run "
            f"`smallmodel lock {' '.join(missing)}` and commit models.lock."
        )
    from pytest_smallmodel.pins.lock_update import stale_reasons

    for reason in stale_reasons(project, lock, targets):
        click.echo(f"warning: models.lock is stale: {reason}. Run `smallmodel lock`.", err=True)
    return lock, [lock.models[name] for name in targets if name in lock.models]


@main.command()
@click.argument("names", nargs=-1)
@click.pass_context
def pull(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Download the pinned files that are not present locally, then verify them."""
    project = _project(ctx)
    _, pins = _locked_targets(project, names)
    from pytest_smallmodel.pins.sources import pull_model

    failed = False
    for pin in pins:
        try:
            result = pull_model(project, pin, progress=True)
        except SourceError as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
            continue
        if result.ok:
            click.echo(f"{pin.name}: ok {result.path}")
        else:
            click.echo(result.message, err=True)
            failed = True
    if failed:
        ctx.exit(1)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--full", is_flag=True, help="Re-hash every file, ignoring the stat cache.")
@click.pass_context
def verify(ctx: click.Context, names: tuple[str, ...], full: bool) -> None:
    """Check local files against models.lock (no network)."""
    project = _project(ctx)
    _, pins = _locked_targets(project, names)
    from pytest_smallmodel.pins.sources import verify_model

    failed = False
    for pin in pins:
        result = verify_model(project, pin, full=full, progress=True)
        spec = project.models.get(pin.name)
        template = (
            template_change(project, spec, pin.chat_template_file) if spec is not None else None
        )
        if result.ok and template is None:
            click.echo(f"{pin.name}: verified {pin.short_sha} {result.path}")
        elif not result.ok:
            click.echo(result.message, err=True)
            failed = True
        if template is not None:
            click.echo(f"{pin.name}: {template}: run `smallmodel lock`", err=True)
            failed = True
    if failed:
        ctx.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Show the llama.cpp runtime and run every locked model present here in a separate process."""
    project = _project(ctx)
    from pytest_smallmodel.cli.doctor import render_text, run_doctor
    from pytest_smallmodel.engine.registry import ModelRegistry

    report = run_doctor(ModelRegistry(project))
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(render_text(report))
    if not report.ok:
        ctx.exit(1)


@main.command(name="list")
@click.pass_context
def list_models(ctx: click.Context) -> None:
    """Show each model: name, short sha, size, source and local status."""
    project = _project(ctx)
    lock = read_lock(project.lock_path) if project.lock_path.exists() else Lock(LOCK_VERSION)
    from pytest_smallmodel.pins.sources import is_pin_fresh, verify_model

    rows = [("NAME", "SHA256", "SIZE", "SOURCE", "STATUS")]
    for name in sorted(set(project.models) | set(lock.models)):
        pin = lock.models.get(name)
        spec: ModelSpec | None = project.models.get(name)
        if pin is None:
            rows.append((name, "-", "-", "-", "not locked"))
            continue
        try:
            status: str = verify_model(project, pin).status
        except SmallModelError:  # unreadable, a directory, a link out: `verify NAME` says which
            status = f"error (see `smallmodel verify {name}`)"
        if spec is None:
            status += " (not declared)"
        elif not is_pin_fresh(spec, pin):
            status += " (stale pin)"
        rows.append((name, pin.short_sha, _human_size(pin.size), pin.describe_source(), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _pending_dir(project: Project, source: Path | None) -> Path:
    if source is not None:
        if not source.is_dir():
            raise ConfigError(
                f"--from {source}: no such directory. Pass the pending directory downloaded "
                "from CI (the artifact of `pytest --smallmodel-pending=DIR`)."
            )
        return source
    return project.root / project.options.pending_dir


@main.command()
@click.option("--list", "list_only", is_flag=True, help="List the pending goldens; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the listing or the outcome as JSON.")
@click.option(
    "--accept",
    "accept_pattern",
    is_flag=False,
    flag_value="*",
    default=None,
    metavar="[PATTERN]",
    help="Accept the pending goldens whose golden path matches the shell-style PATTERN "
    "(all when omitted): each replaces its golden.",
)
@click.option(
    "--reject",
    "reject_pattern",
    is_flag=False,
    flag_value="*",
    default=None,
    metavar="[PATTERN]",
    help="Reject the matching pending goldens (all when omitted): the goldens stay as they are.",
)
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Review this pending directory (e.g. downloaded from CI) instead of the project's.",
)
@click.option(
    "--interactive",
    is_flag=True,
    help="Ask for each pending golden even when stdin is not a terminal (one key per line).",
)
@click.option(
    "--orphans",
    is_flag=True,
    help="Review the goldens no test owns (found by collecting the suite now): d delete, "
    "s skip, q quit; with --list, list them; with --delete [PATTERN], delete the matching ones.",
)
@click.option(
    "--delete",
    "delete_pattern",
    is_flag=False,
    flag_value="*",
    default=None,
    metavar="[PATTERN]",
    help="With --orphans: delete the orphaned goldens matching PATTERN (all when omitted).",
)
@click.pass_context
def review(
    ctx: click.Context,
    list_only: bool,
    as_json: bool,
    accept_pattern: str | None,
    reject_pattern: str | None,
    source: Path | None,
    interactive: bool,
    orphans: bool,
    delete_pattern: str | None,
) -> None:
    """Accept or reject the pending goldens left by failed golden assertions.

    With no action on a terminal, shows each pending golden's drift report and asks:
    a accept, r reject, s skip, A accept all, R reject all, q quit.
    """
    import json
    import sys

    core = review_core
    actions = [list_only, accept_pattern is not None, reject_pattern is not None]
    if sum(actions) > 1:
        raise click.UsageError("choose one of --list, --accept and --reject.")
    if delete_pattern is not None and not orphans:
        raise click.UsageError("--delete works on orphaned goldens: add --orphans.")
    project = _project(ctx)
    if orphans:
        if accept_pattern is not None or reject_pattern is not None or source is not None:
            raise click.UsageError("--orphans goes with --list, --json, --delete or nothing.")
        _review_orphans(ctx, project, list_only, as_json, delete_pattern, interactive)
        return
    items, corrupt = core.load_review(
        _pending_dir(project, source), project.root, project.root / project.options.golden_dir
    )
    if list_only:
        if as_json:
            click.echo(core.listing_json(items, corrupt))
        else:
            for line in core.listing_lines(items, corrupt):
                click.echo(line)
        return
    if accept_pattern is not None or reject_pattern is not None:
        action = core.Action.ACCEPT if accept_pattern is not None else core.Action.REJECT
        pattern = accept_pattern if accept_pattern is not None else reject_pattern
        result = core.apply_to_matching(items, corrupt, action, pattern)
    else:
        if not (interactive or sys.stdin.isatty()):
            raise click.UsageError(
                "stdin is not a terminal: use --list, --accept [PATTERN] or --reject [PATTERN] "
                "(or --interactive to answer one key per line)."
            )
        result = core.run_review(items, corrupt, _ask_key if sys.stdin.isatty() else _ask_line)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in result.lines():
            click.echo(
                line,
                err=not result.ok and line.startswith(("conflict", "corrupt", "refused", "error")),
            )
    if not result.ok:
        ctx.exit(1)


def _collect_orphans(project: Project) -> orphans_core.OrphanScan:
    """Collect the project's suite now (no test runs) and read which goldens nothing owns."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="smallmodel-orphans-") as scratch:
        record = Path(scratch) / "orphans.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--smallmodel-orphans-json={record}",
            ],
            cwd=project.root,
            capture_output=True,
            text=True,
            check=False,
        )
        if not record.exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise ConfigError(
                f"collecting the tests of {project.root} failed (pytest exit {done.returncode}), "
                f"so no golden can be proved orphaned:\n{tail}"
            )
        return orphans_core.read_record(
            record, root=project.root, golden_dir=project.root / project.options.golden_dir
        )


def _review_orphans(
    ctx: click.Context,
    project: Project,
    list_only: bool,
    as_json: bool,
    pattern: str | None,
    interactive: bool,
) -> None:
    import fnmatch
    import json
    import sys

    scan = _collect_orphans(project)
    if scan.partial:
        raise ConfigError(
            "the collection was partial (tests deselected, e.g. by -m or -k in addopts), so "
            "no golden can be proved orphaned: run `smallmodel review --orphans` where the whole "
            "suite is collected"
        )
    if list_only or (pattern is None and not (interactive or sys.stdin.isatty())):
        if as_json:
            click.echo(json.dumps([o.to_dict() for o in scan.orphans], indent=2))
        else:
            for orphan in scan.orphans:
                click.echo(f"orphaned  {orphan.name}")
            count = len(scan.orphans)
            click.echo(f"{count} orphaned golden{'s' if count != 1 else ''}")
        return
    chosen = [
        orphan
        for orphan in scan.orphans
        if pattern is None or fnmatch.fnmatchcase(orphan.name, pattern)
    ]
    if pattern not in (None, "*") and not chosen:
        click.echo(f"error: no orphaned golden matches {pattern!r}", err=True)
        ctx.exit(1)
    deleted = 0
    for position, orphan in enumerate(chosen, start=1):
        if pattern is None:
            click.echo(f"[{position}/{len(chosen)}] orphaned golden {orphan.name}")
            answer = click.prompt(
                "[d]elete, [s]kip, [q]uit", type=click.Choice(["d", "s", "q"]), show_choices=False
            )
            if answer == "q":
                break
            if answer == "s":
                continue
        removed, message = orphans_core.delete(orphan)
        deleted += removed
        click.echo(message)
    click.echo(f"{deleted} orphaned golden{'s' if deleted != 1 else ''} deleted")


def _show(item: review_core.ReviewItem, position: int, total: int) -> None:
    click.echo("")
    click.echo(f"[{position}/{total}] " + "\n".join(item.describe()))


def _ask_key(item: review_core.ReviewItem, position: int, total: int) -> review_core.Key:
    """On a terminal: one key press, no Enter."""
    _show(item, position, total)
    click.echo(f"{review_core.KEY_HELP}? ", nl=False)
    keys = {key.value for key in review_core.Key}
    while True:
        # One read may hold several keys typed ahead (or an escape sequence): the first key
        # counts, the rest is dropped rather than applied to goldens not yet shown.
        for pressed in click.getchar():
            if pressed in keys:
                click.echo(pressed)
                return review_core.Key(pressed)
            if pressed in ("\x03", "\x04"):  # Ctrl-C, Ctrl-D: stop like q; decisions stay
                click.echo("q")
                return review_core.Key.QUIT


def _ask_line(item: review_core.ReviewItem, position: int, total: int) -> review_core.Key:
    """``--interactive`` without a terminal: one key per line."""
    _show(item, position, total)
    answer = click.prompt(
        review_core.KEY_HELP,
        type=click.Choice([key.value for key in review_core.Key]),
        show_choices=False,
    )
    return review_core.Key(answer)


@main.command(name="compare")
@click.argument("old")
@click.argument("new")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-contained HTML report (side by side, tokens shaded by logprob).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as JSON.",
)
@click.option(
    "--update",
    is_flag=True,
    help="Write NEW's results as pending goldens; `smallmodel review` then finishes the switch.",
)
@click.option(
    "--fail-under",
    "fail_under",
    metavar="ACCURACY",
    callback=lambda ctx, param, value: _accuracy_threshold(value),
    default=None,
    help="Exit 1 when NEW's accuracy on an evaluation golden is below ACCURACY (0 to 1).",
)
@click.option(
    "--fail-if-worse",
    is_flag=True,
    help="Exit 1 when NEW is significantly worse than OLD on an evaluation golden "
    "(exact McNemar test, p < 0.05).",
)
@click.pass_context
def compare_models(
    ctx: click.Context,
    old: str,
    new: str,
    html_path: Path | None,
    json_path: Path | None,
    update: bool,
    fail_under: float | None,
    fail_if_worse: bool,
) -> None:
    """Replay the requests stored in OLD's goldens on the locked model NEW and report.

    OLD and NEW are model names (optionally NAME@SHA256PREFIX); they may be the same name after
    `smallmodel lock --upgrade NAME`, whose goldens still hold the old sha256. The Markdown
    report goes to stdout.
    """
    import json
    from dataclasses import replace

    from pytest_smallmodel.cli import compare_render
    from pytest_smallmodel.cli.compare import peak_rss_mib, run_compare
    from pytest_smallmodel.common.atomic import atomic_write_text
    from pytest_smallmodel.engine.registry import ModelReference, ModelRegistry
    from pytest_smallmodel.goldens.pending import PendingStore

    project = _project(ctx)
    golden_dir = project.root / project.options.golden_dir
    pending = (
        PendingStore(_pending_dir(project, None), golden_dir=golden_dir, root=project.root)
        if update
        else None
    )
    registry = ModelRegistry(project)
    try:
        report = run_compare(
            registry,
            golden_dir=golden_dir,
            old=ModelReference.parse(old),
            new=ModelReference.parse(new),
            pending=pending,
            fail_under=fail_under,
            fail_if_worse=fail_if_worse,
        )
    finally:
        registry.close()
    if report.figures.peak_memory == "process":
        # Measured again once closed: a model run in a worker process counts when it has exited.
        report.figures = replace(report.figures, new_peak_rss_mib=peak_rss_mib())
    click.echo(compare_render.markdown(report), nl=False)
    if html_path is not None:
        atomic_write_text(html_path, compare_render.html_page(report))
    if json_path is not None:
        data = compare_render.to_dict(report)
        atomic_write_text(json_path, json.dumps(data, indent=2, ensure_ascii=False))
    for line in report.unusable:
        click.echo(f"error: {line}", err=True)
    for gate in report.failed_gates:
        click.echo(f"error: {gate.gate} failed{_on(gate.golden)}: {gate.reason}", err=True)
    if report.unusable or report.failed_gates:
        ctx.exit(1)


@main.command(name="calibrate")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--write",
    is_flag=True,
    help="Write each model's recommended tolerance into its spec ([tool.smallmodel.models]).",
)
@click.option(
    "--no-server", is_flag=True, help="Leave llama-server out of the variants even if installed."
)
@click.pass_context
def calibrate_command(
    ctx: click.Context, names: tuple[str, ...], as_json: bool, write: bool, no_server: bool
) -> None:
    """Replay each model's goldens under benign runtime variants and recommend a tolerance.

    The variants keep every request the same in meaning: one thread, small batches, flash
    attention flipped, repacking flipped, incremental evaluation instead of the batched pass,
    llama-server. The report lists fragile goldens (near-ties below the measured noise). Exit
    1 only when nothing could be measured.
    """
    from pytest_smallmodel.cli import calibrate as calibration
    from pytest_smallmodel.common.progress import progress as counted
    from pytest_smallmodel.engine.registry import ModelRegistry
    from pytest_smallmodel.engine.variants import MAX_LOADS
    from pytest_smallmodel.pins.project_edit import set_model_key

    project = _project(ctx)
    _check_names(project, names)
    bars: list[Generator[int, None, None]] = []

    def progress(goldens: int) -> Callable[[], None]:
        # The bar counts what its loop hands out: each replay measured takes the next number,
        # the first taken here, so that it shows the replays done (the last one closes it).
        bar = counted(range(goldens * MAX_LOADS), what="golden replays")
        next(bar, None)
        bars.append(bar)

        def replayed() -> None:
            next(bar, None)

        return replayed

    registry = ModelRegistry(project)
    try:
        report = calibration.run_calibration(
            project, registry, names, progress=progress, server=not no_server
        )
    finally:
        registry.close()
        for bar in bars:
            bar.close()  # a variant that did not load leaves its replays uncounted
    click.echo(calibration.to_json(report) if as_json else "\n".join(calibration.render(report)))
    if not report.measured:
        click.echo("error: nothing could be measured (see above)", err=True)
        ctx.exit(1)
    if write:
        for model in report.models:
            if model.steps:
                set_model_key(project.pyproject, model.model, "tolerance", model.recommended)
                click.echo(
                    f"wrote tolerance = {model.recommended} to model {model.model} in "
                    f"{project.pyproject}",
                    err=True,
                )


def _on(golden: str | None) -> str:
    return f" on {golden}" if golden else ""


def _accuracy_threshold(value: str | None) -> float | None:
    """--fail-under's value: a finite number in [0, 1], or a usage error saying so."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise click.BadParameter(
            f"{value!r} is not an accuracy: give a number from 0 to 1, e.g. 0.8",
            param_hint="'--fail-under'",
        )
    return number
