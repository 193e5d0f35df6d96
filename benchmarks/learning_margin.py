"""Seed noise at the learning tests' budget: a method vs its random-init floor.

Runs ``sslreg.testing.learning_run`` (the quick suite's CPU budget, with the method's
tuned rate) for several seeds and prints validation kNN20 and linear accuracy of the
method and of the random-init floor, then the per-seed gap, so the margin a learning
test asserts can be set against the spread between seeds:

    .venv/bin/python benchmarks/learning_margin.py --method simclr --seeds 0 1 2

The work is ``sslreg.testing.margin_main``, installed with sslreg, so a plugin author
without this repository runs the same with ``python -m sslreg.testing --method NAME``.
"""

from sslreg.testing import margin_main

if __name__ == "__main__":
    margin_main()
