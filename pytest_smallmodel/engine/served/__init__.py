"""Backends that reach a model over HTTP.

``model`` is what they share (tokenizing and chat rendering from the pinned file), ``api`` is
JSON over HTTP, ``llama_backend`` is llama.cpp's ``llama-server`` (managed or running) with
``process`` starting and watching the server binary, ``openai_backend`` is any
OpenAI-compatible endpoint.
"""
