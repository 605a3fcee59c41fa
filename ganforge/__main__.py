"""``python -m ganforge``: the ``ganforge`` command (what ``torchrun -m ganforge`` starts)."""

from .cli import main

main()
