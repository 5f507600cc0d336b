"""Errors that callers (CLI, plugin) turn into one clear message and an exit code.

Every expected failure is a ``SmallModelError``: its ``str`` is the whole message a user sees,
so it names the file, the field and the fix. Anything else escaping is a bug.
"""

from __future__ import annotations


class SmallModelError(Exception):
    """Base class: the message is complete and user-facing."""

    exit_code = 2


class ConfigError(SmallModelError):
    """pyproject.toml / marker / settings are invalid (usage or configuration: exit 2)."""

    exit_code = 2


class LockError(SmallModelError):
    """models.lock is missing, corrupt, or does not match the specs."""

    exit_code = 2


class SourceError(SmallModelError):
    """A model source could not be resolved or downloaded (network, HTTP, glob...)."""

    exit_code = 1


class VerificationError(SmallModelError):
    """A local model file is missing or does not match its pinned sha256 (a failed check)."""

    exit_code = 1


class EngineError(SmallModelError):
    """The engine could not load a model or run a request (bad GGUF, context too small...)."""

    exit_code = 1


class GoldenError(SmallModelError):
    """A golden file is corrupt, hand-edited into an invalid form, or of an unknown version."""

    exit_code = 1
