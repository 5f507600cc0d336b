"""Running models: from a reference to a loaded model answering requests.

``registry`` turns ``"name@sha"`` into a verified ``handle.ModelHandle``; the handle builds
requests and results over a ``backend.Backend``, chosen per spec in ``backend_table``. One
backend runs llama-cpp-python in a worker process (``worker/``), the others reach a model over
HTTP (``served/``). ``result_cache`` keeps results across runs; ``crash`` says why a process died.
"""
