"""``python -m pytest_smallmodel.cli``: the ``smallmodel`` command without its console script."""

from pytest_smallmodel.cli import main

main()
