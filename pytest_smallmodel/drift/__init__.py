"""Deciding whether a result still matches its golden, and saying so.

``rules`` compares and returns a ``verdict.Verdict`` (data, no prose); ``explanation`` turns a
verdict into the text a failing test shows; ``reports`` renders the session's verdicts (terminal,
Markdown, JSON); ``batched`` checks a golden with one teacher-forced pass in tolerance mode.
"""
