"""`python -m ltx.cli ...`: the `ltx` command."""

from ltx.cli import main

main()
