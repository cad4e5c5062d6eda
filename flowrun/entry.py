"""The `flowrun` console script and `python -m flowrun`: answer a bare `flowrun --version`
before anything is imported, hand everything else to the Typer CLI (`flowrun.cli`), and make
sure the process ends once the command is done.

A command ends by raising `SystemExit`; the interpreter's teardown then waits for every
non-daemon thread and for the atexit handlers. A node can leave a thread that never ends
(`threading.Thread(target=serve_forever).start()`), and the teardown would wait for it
forever after the result was printed. So the exit is bounded: if the teardown has not finished
`TEARDOWN_GRACE_S` after the command ended, the process exits with the command's code anyway
(everything holding data, the store, the `--events` file, the output, was closed or flushed
by then; what is left is freeing memory and joining threads nobody waits for)."""

from __future__ import annotations

import sys

#: how long the interpreter's ordinary teardown may take after the command is done (the
#: process and Dask backends stop their workers there); past it the process exits at once
TEARDOWN_GRACE_S = 2.0


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
    import gc

    # Until the command's work starts (`cli._work_starts`): the start-up makes many objects
    # and hardly any cyclic garbage, so collections there only walk what was just made.
    gc.disable()
    from flowrun.cli import main as cli_main

    try:
        cli_main()
    except SystemExit as exc:
        bound_teardown(exit_code(exc.code))
        raise
    except BaseException:  # an uncaught error prints its traceback and exits 1
        bound_teardown(1)
        raise
    bound_teardown(0)


def exit_code(code: object) -> int:
    """The status `SystemExit(code)` ends the process with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1  # a message: printed on stderr, status 1


def bound_teardown(code: int, grace: float = TEARDOWN_GRACE_S) -> None:
    """Exit with `code` at the latest `grace` seconds from now, whatever is still running.

    A daemon thread keeps running while the interpreter joins the other threads and runs the
    atexit handlers, which is where a leftover thread makes it wait; once the interpreter is
    past that, daemon threads no longer run, so an ordinary exit is never cut short."""
    import contextlib
    import os
    import threading

    def force() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more can reach it
                stream.flush()
        os._exit(code)

    timer = threading.Timer(grace, force)
    timer.daemon = True
    timer.name = "flowrun-exit"
    timer.start()
