"""The engine worker: llama-cpp-python in its own process per loaded model.

Split as pytest-xdist splits its controller and ``remote.py``: ``parent`` is the pytest-side
proxy that starts the process and talks to it over pipes, ``child`` is what runs in the worker
(it imports nothing of ``parent``), ``protocol`` is what both agree on, and ``runtime`` is the
llama.cpp runtime the child drives.
"""
