"""``python -m auren``: the same command as the ``auren`` console script."""

from auren.cli import main

main()
