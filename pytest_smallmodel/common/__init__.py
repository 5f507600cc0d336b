"""What every layer shares and that imports nothing of the others.

Errors a caller turns into one message (``errors``), atomic file writes (``atomic``), the engine
settings that can change tokens (``settings``), the plain result types a test asserts on
(``results``) and the environment fingerprint that goldens record (``fingerprint``).
"""
