"""pytest-smallmodel: pin small GGUF models by SHA-256 and regression-test their greedy outputs."""

from __future__ import annotations

__version__ = "0.1.0"
