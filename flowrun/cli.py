"""The `flowrun` command: parse, call `api`, print, map `FlowrunError` to an exit code in one
place. Heavy modules are imported inside the commands so `flowrun --version` stays fast."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from flowrun import __version__
from flowrun.errors import BlueprintError, FlowrunError

if TYPE_CHECKING:
    from flowrun.api import Run
    from flowrun.display.plain import Reporter, RunRecord
    from flowrun.report import RunReport

app = typer.Typer(
    name="flowrun",
    help="Run YAML/JSON workflow blueprints: DAGs with batch fan-out, retries and resume.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class ValidateFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"


class GraphFormat(StrEnum):
    ascii = "ascii"
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


class ExecutorKind(StrEnum):
    thread = "thread"
    process = "process"
    dask = "dask"


FileArg = Annotated[
    Path, typer.Argument(metavar="FILE", help="Blueprint file (.yaml, .yml or .json).")
]
StateDir = Annotated[
    Path,
    typer.Option("--state-dir", metavar="DIR", help="Where run state is kept: DIR/runs/<runId>/."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for flowrun errors.")]


def _version(value: bool) -> None:
    if value:
        print(f"flowrun {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """flowrun: run workflow blueprints."""


def _fail(exc: FlowrunError, debug: bool) -> NoReturn:
    """The one place a flowrun error becomes output and an exit code."""
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    else:
        print(
            f"flowrun: error: {exc}" if not isinstance(exc, BlueprintError) else exc,
            file=sys.stderr,
        )
    raise typer.Exit(exc.exit_code)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="Blueprint files to check.")],
    fmt: Annotated[ValidateFormat, typer.Option("--format", help="Output format.")] = (
        ValidateFormat.text
    ),
) -> None:
    """Check blueprints without running them; print every problem at once (exit 2 if any)."""
    from flowrun import api

    problems = []
    for f in files:
        found = api.validate_file(f)
        problems += found
        if fmt is ValidateFormat.text:
            for p in found:
                print(p)
            if not found:
                pools = api.pool_lines(f)
                print(f"{f}: ok" + (f" (pools: {'; '.join(pools)})" if pools else ""))
    if fmt is ValidateFormat.json:
        print(json.dumps([p.as_dict() for p in problems], indent=2))
    elif fmt is ValidateFormat.github:
        for p in problems:
            msg = p.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            print(f"::{p.severity} file={p.file},line={p.line},col={p.column}::{msg}")
    errors = [p for p in problems if p.severity == "error"]
    if fmt is ValidateFormat.text and errors:
        n = len({p.file for p in errors})
        print(f"{len(errors)} problem{'s' * (len(errors) != 1)} in {n} file{'s' * (n != 1)}")
    raise typer.Exit(2 if errors else 0)


@app.command()
def graph(
    file: FileArg,
    fmt: Annotated[GraphFormat, typer.Option("--format", help="Output format.")] = (
        GraphFormat.ascii
    ),
    debug: Debug = False,
) -> None:
    """Print the expanded DAG (batches as scatter / worker / gather)."""
    from flowrun import api, diagram

    try:
        g = api.load(file)
    except FlowrunError as exc:
        _fail(exc, debug)
    sys.stdout.write(diagram.render(g, fmt.value))


@app.command("schema")
def schema_cmd() -> None:
    """Print the blueprint JSON Schema (for editors and other tools)."""
    from flowrun.blueprint import schema

    sys.stdout.write(schema.schema_text())


@app.command()
def run(
    file: FileArg,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            metavar="N",
            help="Most nodes and batch items running at once.",
        ),
    ] = 8,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Override one context key (VALUE is a YAML scalar: 3 is an int). Repeatable.",
        ),
    ] = None,
    context: Annotated[
        Path | None,
        typer.Option("--context", metavar="FILE", help="JSON/YAML file of initial context values."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")
    ] = False,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", metavar="FILE", help="Append one JSON event per line to this file."
        ),
    ] = None,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress display.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    fail_fast: Annotated[
        bool,
        typer.Option("--fail-fast/--keep-going", help="Stop starting work at the first failure."),
    ] = False,
    executor: Annotated[ExecutorKind, typer.Option("--executor", help="Where nodes run.")] = (
        ExecutorKind.thread
    ),
    address: Annotated[
        str | None,
        typer.Option("--address", metavar="URL", help="Dask scheduler address (tcp://host:8786)."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", metavar="RUN_ID", help="Resume a run: RUN_ID or 'latest'."),
    ] = None,
    allow_changed: Annotated[
        bool,
        typer.Option(
            "--allow-changed", help="With --resume: resume even if the blueprint changed."
        ),
    ] = False,
    state_dir: StateDir = Path(".flowrun"),
    debug: Debug = False,
) -> None:
    """Run a blueprint. Exit 0 completed, 1 failed, 2 invalid input, 130 interrupted."""
    from rich.console import Console

    from flowrun import api
    from flowrun.display.live import choose_mode, make_reporter
    from flowrun.eventlog import EventLog

    console = Console(stderr=True)
    mode = choose_mode(console, quiet=quiet, no_progress=no_progress, env=os.environ)
    # --no-progress hides the display, not the run's errors: those print as --quiet prints them.
    reporter = make_reporter("quiet" if mode == "off" else mode, console)
    log = None
    try:
        log = EventLog(events) if events is not None else None
        options = api.RunOptions(
            concurrency=concurrency,
            sets=sets or (),
            context_file=str(context) if context else None,
            fail_fast=fail_fast,
            executor=executor.value,
            address=address,
            resume=resume,
            allow_changed=allow_changed,
            state_dir=state_dir,
            sinks=[s for s in (reporter, log) if s is not None],
        )
        with api.Run(file, options) as r, _signals(r, reporter), reporter:
            report = r.start()
    except FlowrunError as exc:
        _fail(exc, debug)
    finally:
        if log is not None:
            log.close()
    reporter.summary()
    _print_unannounced(report.errors, reporter.record)
    if as_json:
        print(report.to_json())
    elif mode != "quiet":
        _print_results(r, report)
    _exit(report.exit_code)


def _print_unannounced(errors: list[dict[str, str]], record: RunRecord) -> None:
    """A failed run always says why on stderr: errors that no failure event announced to the
    display (so it printed nothing for them) get one line each."""
    seen = {rec.node for rec in record.failures} | set(record.failed_items)
    for e in errors:
        if e["node"] not in seen:
            print(f"flowrun: {e['node']} failed: {e['type']}: {e['message']}", file=sys.stderr)


def _print_results(r: Run, report: RunReport) -> None:
    """Without --json: the outputs of the final nodes (those no edge leaves), one per line."""
    graph, context = r.prepared.graph, report.context
    for spec in graph.blueprint.nodes:
        key = graph.output_keys[spec.id]
        if not graph.is_final(spec.id) or key not in context:
            continue
        text = json.dumps(context[key], ensure_ascii=False)
        print(f"{key}: {text if len(text) <= 500 else text[:497] + '...'}")


@contextlib.contextmanager
def _signals(r: Run, reporter: Reporter) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): stop starting work, let running nodes finish, save, exit 130.
    Second: exit 130 at once (the terminal is restored first)."""

    def handler(signum: int, frame: object) -> None:
        if r.cancelled.is_set():
            with contextlib.suppress(Exception):
                reporter.stop()
            os._exit(130)
        print("flowrun: interrupted; finishing running nodes (Ctrl-C again to quit now)",
              file=sys.stderr)  # fmt: skip
        r.cancel()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _exit(code: int) -> NoReturn:
    """Exit without waiting for abandoned node threads (a cancelled or timed-out attempt that
    never returns must not keep the process alive)."""
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise typer.Exit(code)


@app.command()
def runs(
    state_dir: StateDir = Path(".flowrun"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, metavar="N", help="How many runs.")
    ] = 20,
    debug: Debug = False,
) -> None:
    """List recent runs (newest first) with their status, for `run --resume`."""
    import dataclasses

    from flowrun.store import list_runs

    try:
        found = list_runs(state_dir, limit)
    except FlowrunError as exc:
        _fail(exc, debug)
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in found], indent=2))
        return
    if not found:
        print(f"no runs under {state_dir}/runs", file=sys.stderr)
        return
    from rich.console import Console
    from rich.table import Table

    # The ids are what --resume takes: they are never cut; a long blueprint name folds instead.
    table = Table(box=None, pad_edge=False)
    table.add_column("run id", no_wrap=True, min_width=max(len(r.run_id) for r in found))
    table.add_column("blueprint", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True, min_width=19)
    table.add_column("duration", no_wrap=True, justify="right")
    for r in found:
        started = _utc(r.started) if r.started else "-"
        took = f"{r.duration_s:.2f} s" if r.duration_s is not None else "-"
        table.add_row(r.run_id, r.blueprint_id or r.blueprint_path, r.status, started, took)
    Console(soft_wrap=True).print(table)


def _utc(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="flowrun")


if __name__ == "__main__":  # pragma: no cover
    main()
