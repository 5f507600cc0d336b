"""Print pip constraints that pin every direct dependency of pyproject.toml to its floor.

pip then installs the lowest versions the project claims to support (what `uv pip install
--resolution lowest-direct` does), from pip's own cache where it can: llama-cpp-python's floor
is the version the examples extra pins, whose wheel the README install already built, so nothing
is compiled twice. Transitive dependencies resolve as usual.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQUIREMENT_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
_FLOOR_RE = re.compile(r"(>=|==)\s*([0-9][A-Za-z0-9.]*)")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def floors(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    name = project["name"].lower()
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    result: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT_RE.match(requirement.split(";", 1)[0])
        if match is None:
            continue
        package = match[1].lower().replace("_", "-")
        if package == name:
            continue  # the project's own extras
        bounds = [version for _, version in _FLOOR_RE.findall(match[2])]
        if not bounds:
            continue  # unbounded (type stubs): any version is claimed, the newest is fine
        # The highest bound over every mention: an extra may pin above the core floor.
        highest = max(bounds, key=_version_key)
        if package not in result or _version_key(highest) > _version_key(result[package]):
            result[package] = highest
    return result


if __name__ == "__main__":
    for package, version in sorted(floors(Path(sys.argv[1])).items()):
        print(f"{package}=={version}")
