"""``python -m sslreg`` (and ``torchrun -m sslreg``): the ``sslreg`` command line."""

from sslreg.cli import main

main()
