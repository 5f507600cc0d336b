"""Chat template files named in a model's spec (``chat_template = "templates/base.jinja"``).

Base models often ship without ``tokenizer.chat_template``; a template file in the project then
renders ``chat``, ``classify`` and ``extract`` messages. Its bytes decide the prompt, so it is
pinned like the model: ``smallmodel lock`` records its sha256, ``lock --check`` and ``verify``
fail when it changed, and pytest refuses a file that no longer matches the lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from pytest_smallmodel.common.errors import ConfigError, VerificationError
from pytest_smallmodel.pins.project import ModelSpec, Project


def template_path(project: Project, name: str, relative: str) -> Path:
    """The template file inside the project; links are resolved before the containment check."""
    where = f"{project.pyproject}: [tool.smallmodel.models] {name}"
    path = (project.root / relative).resolve()
    if not path.is_relative_to(project.root):
        raise ConfigError(
            f"{where}: chat_template = {relative!r} resolves to {path}, outside the project "
            f"({project.root}); keep template files inside the project"
        )
    if not path.is_file():
        raise ConfigError(
            f"{where}: chat_template = {relative!r} does not exist ({path}); create the "
            "template file or fix the path"
        )
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_syntax(name: str, path: Path, text: str) -> None:
    """Raise one ConfigError naming the file and line when ``text`` is not a Jinja template.

    Parsed as llama-cpp-python's chat formatter does (its sandboxed environment, same
    whitespace options), so a template that passes here compiles there: without this a syntax
    error surfaces only when a test first renders a chat, as a worker traceback.
    """
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True
    )
    try:
        environment.parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise ConfigError(
            f"{name}: chat template {path}, line {error.lineno}: {error.message}. Fix the "
            "template (Jinja syntax) and run `smallmodel lock`"
        ) from None


def _text(name: str, path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: chat template {path} is not UTF-8 text") from None
    check_syntax(name, path, text)
    return text


def pin_template(project: Project, spec: ModelSpec) -> Mapping[str, str] | None:
    """The lock entry for the spec's template file: its path and sha256 (None without one)."""
    if spec.chat_template is None:
        return None
    path = template_path(project, spec.name, spec.chat_template)
    data = path.read_bytes()
    _text(spec.name, path, data)
    return {"path": spec.chat_template, "sha256": hashlib.sha256(data).hexdigest()}


def template_change(
    project: Project, spec: ModelSpec, pinned: Mapping[str, str] | None
) -> str | None:
    """Why the spec's template no longer matches ``pinned`` (None when it does)."""
    declared = spec.chat_template
    locked = pinned.get("path") if pinned else None
    if declared != locked:
        return f"chat_template changed (locked {locked!r}, declared {declared!r})"
    if declared is None or pinned is None:
        return None
    path = (project.root / declared).resolve()
    if not path.is_file():
        return f"chat template {declared} is missing ({path})"
    current = _digest(path)
    if current != pinned.get("sha256"):
        return (
            f"chat template {declared} changed (locked sha256 {pinned.get('sha256', '')[:12]}, "
            f"now {current[:12]})"
        )
    return None


def load_template(project: Project, name: str, pinned: Mapping[str, str] | None) -> str | None:
    """The pinned template's text for loading the model; it must still match the lock."""
    if pinned is None:
        return None
    path = template_path(project, name, pinned["path"])
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != pinned["sha256"]:
        raise VerificationError(
            f"{name}: chat template {pinned['path']} does not match models.lock (locked sha256 "
            f"{pinned['sha256'][:12]}): restore it, or if the change is intended run "
            "`smallmodel lock` and commit models.lock"
        )
    return _text(name, path, data)
