"""pytest plugin entry point (pytest11). Being built: see issue 3."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "model(name, **settings): run this test on a pinned model")
