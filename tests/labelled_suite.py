"""The labelled support tickets and routing task the evaluation integration tests run, as the
source text their inner suites start with."""

from __future__ import annotations

QUEUES = ["billing", "technical", "account", "shipping"]

HEADER = """
import json
import math
import pytest
from pytest_smallmodel import EvaluationError

QUEUES = ["billing", "technical", "account", "shipping"]
CASES = [
    {"id": "t1", "input": "I was charged twice for my subscription.", "expected": "billing"},
    {"id": "t2", "input": "The app crashes when I open settings.", "expected": "technical"},
    {"id": "t3", "input": "I forgot my password.", "expected": "account"},
    {"id": "t4", "input": "My parcel has not arrived.", "expected": "shipping"},
    {"id": "t5", "input": "Please refund my last payment.", "expected": "billing"},
    {"id": "t6", "input": "The website shows error 500.", "expected": "technical"},
]

def route(model, case):
    return model.classify(f"Support ticket: {case.input}\\nQueue:", QUEUES)
"""
