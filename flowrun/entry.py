"""The `flowrun` console script and `python -m flowrun`: answer a bare `flowrun --version`
before anything is imported, hand everything else to the Typer CLI (`flowrun.cli`)."""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point."""
    # Exactly the one argument: with any other argument next to it the CLI must parse the
    # whole line (a usage error still wins there), so only this form skips the import of the
    # CLI; it prints what the CLI's eager --version prints.
    if sys.argv[1:] == ["--version"]:
        from flowrun import __version__

        sys.stdout.write(f"flowrun {__version__}\n")
        sys.stdout.flush()
        return
    from flowrun.cli import main as cli_main

    cli_main()
