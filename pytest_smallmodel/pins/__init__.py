"""Pins: which model files a project declares, and proof that the local file is the pinned one.

``project`` reads ``[tool.smallmodel]``, ``lockfile`` reads and writes models.lock,
``lock_update`` decides what ``smallmodel lock`` / ``lock --check`` do, ``sources/`` resolves
and fetches each kind of source, ``hashing`` and ``gguf_info`` read the file, ``chat_template``
pins template files. Nothing here runs a model.
"""
