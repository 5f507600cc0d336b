"""The grammar of each kind of model source: the keys a spec declares and a pin adds, the checks
of their values (with the fix), the defaults a fresh pin agrees with, and the one-line
description in tables.

``project`` reads specs and ``lockfile`` writes and describes pins through this grammar alone;
what a kind *does* with a pin (resolve, find, fetch, verify) is its module in ``sources/``, which
needs ``project`` and ``lockfile`` in turn. Kept apart so that neither side imports the other's
importer. A new kind is one class here, registered in ``SOURCE_SPECS``, plus its module in
``sources/`` and its part of ``lock.schema.json``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import ClassVar

from pytest_smallmodel.common.errors import ConfigError

DEFAULT_HF_REVISION = "main"
_HF_REPO_RE = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_GLOB_CHARS = frozenset("*?[")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


class SourceSpec:
    """One kind's grammar; a stateless singleton registered in ``SOURCE_SPECS``."""

    # The spec key that selects this kind, e.g. "hf".
    kind: ClassVar[str]
    # The keys a spec may declare, the kind's key first: the order pins and messages write.
    declared_keys: ClassVar[tuple[str, ...]]
    required_keys: ClassVar[frozenset[str]]
    # The moving parts that `smallmodel lock` resolves and the pin adds (e.g. hf's commit).
    resolved_keys: ClassVar[tuple[str, ...]] = ()

    def check_spec(self, where: str, source: Mapping[str, str]) -> None:
        """Reject declared values this kind cannot use, with the fix; ``where`` names the spec.

        The default refuses ``file`` and ``path`` values that leave their root.
        """
        for key in ("file", "path"):
            if key in source:
                check_relative_path(where, key, source[key])

    def normalized(self, source: Mapping[str, str]) -> dict[str, str]:
        """The declared source with defaults filled in: what a pin must agree with to be fresh."""
        return dict(source)

    def is_glob(self, source: Mapping[str, str]) -> bool:
        """True when the spec names its file with a pattern that `lock` resolves to one file."""
        return False

    def describe(self, source: Mapping[str, str]) -> str:
        """One line for tables and messages, e.g. ``hf:org/repo@abc1234/file.gguf``."""
        raise NotImplementedError


class HuggingFaceSpec(SourceSpec):
    kind = "hf"
    declared_keys = ("hf", "file", "revision")
    required_keys = frozenset({"hf", "file"})
    resolved_keys = ("commit", "filename")

    def check_spec(self, where: str, source: Mapping[str, str]) -> None:
        if not _HF_REPO_RE.fullmatch(source["hf"]):
            raise ConfigError(
                f'{where}: hf = {source["hf"]!r} is not a Hugging Face repo id; use "org/name".'
            )
        super().check_spec(where, source)

    def normalized(self, source: Mapping[str, str]) -> dict[str, str]:
        return {**source, "revision": source.get("revision", DEFAULT_HF_REVISION)}

    def is_glob(self, source: Mapping[str, str]) -> bool:
        return is_glob(source["file"])

    def describe(self, source: Mapping[str, str]) -> str:
        return f"hf:{source['hf']}@{source['commit'][:7]}/{source['filename']}"


class UrlSpec(SourceSpec):
    kind = "url"
    declared_keys = ("url", "sha256")
    required_keys = frozenset({"url"})

    def check_spec(self, where: str, source: Mapping[str, str]) -> None:
        url = source["url"]
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url = {url!r} must start with http:// or https://.")
        digest = source.get("sha256")
        if digest is not None and not _SHA256_RE.fullmatch(digest):
            raise ConfigError(
                f"{where}: sha256 = {digest!r} must be 64 hexadecimal characters "
                "(the output of sha256sum)."
            )

    def normalized(self, source: Mapping[str, str]) -> dict[str, str]:
        normalized = dict(source)
        if "sha256" in normalized:
            normalized["sha256"] = normalized["sha256"].lower()
        return normalized

    def describe(self, source: Mapping[str, str]) -> str:
        return f"url:{source['url']}"


class PathSpec(SourceSpec):
    kind = "path"
    declared_keys = ("path",)
    required_keys = frozenset({"path"})

    def describe(self, source: Mapping[str, str]) -> str:
        return f"path:{source['path']}"


class PackageSpec(SourceSpec):
    kind = "package"
    declared_keys = ("package", "file")
    required_keys = frozenset({"package", "file"})
    resolved_keys = ("version",)

    def describe(self, source: Mapping[str, str]) -> str:
        return f"package:{source['package']}=={source['version']}/{source['file']}"


# Every kind of source, by the spec key that selects it; the order of messages listing them.
SOURCE_SPECS: Mapping[str, SourceSpec] = MappingProxyType(
    {spec.kind: spec for spec in (HuggingFaceSpec(), UrlSpec(), PathSpec(), PackageSpec())}
)


def is_glob(pattern: str) -> bool:
    return any(char in _GLOB_CHARS for char in pattern)


def check_relative_path(where: str, key: str, value: str) -> None:
    """Reject paths that leave their root, so a spec cannot point outside the repo/project."""
    pure = PurePosixPath(value.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise ConfigError(
            f"{where}: {key} = {value!r} must be a relative path inside its root, not absolute."
        )
    if ".." in pure.parts:
        raise ConfigError(
            f"{where}: {key} = {value!r} escapes its root with '..'; "
            "use a path inside the project (or repo / distribution)."
        )
