"""``python -m coreplane.ops``: the `coreplane` command without the console script."""

from coreplane.ops.cli import main

main(prog_name="coreplane")
