"""Quality of a model on labelled cases: datasets, scoring, metrics with intervals, latency.

Goldens pin *behaviour*; this layer measures *quality*: ``cases`` reads a labelled dataset
(JSONL, CSV or a Python list), ``scoring`` judges one output against its expected value,
``report`` turns the verdicts into metrics (accuracy, per-label and per-field figures, each an
estimate with its 95 % Wilson interval, plus latency), and ``stats`` holds the few formulas
(Wilson interval, exact McNemar test). It depends only on ``common``: the engine's handle runs
the cases (``ModelHandle.evaluate``) and hands the outputs in.
"""
