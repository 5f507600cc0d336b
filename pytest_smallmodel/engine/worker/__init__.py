"""The engine worker: llama-cpp-python in its own process per loaded model.

``parent`` is the pytest-side proxy that starts the process and talks to it over pipes;
``runtime`` is the llama.cpp runtime that runs inside the worker.
"""
