"""Goldens as data and files: what a golden holds (``records``), its JSON file (``file_format``),
pending results beside it (``pending``), which goldens are unused (``unused``) or orphaned
(``orphans``) and reviewing pending ones (``review``). Nothing here decides whether a result
matches; ``drift`` does.
"""
