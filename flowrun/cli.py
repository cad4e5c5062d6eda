"""The `flowrun` command: parse, call `api`, print, map `FlowrunError` to an exit code in one
place. Heavy modules are imported inside the commands so `flowrun --version` stays fast.

No `from __future__ import annotations` here: Typer reads each command's parameters from its
annotations, and string annotations cost it an `eval` (a parse and a compile) per parameter,
twice, on every start-up; the names only `TYPE_CHECKING` imports are quoted instead."""

import contextlib
import functools
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec

import typer

from flowrun import __version__
from flowrun.errors import BlueprintError, FlowrunError

if TYPE_CHECKING:
    from flowrun.api import Run, RunOptions
    from flowrun.display.plain import Mode, Reporter, RunRecord
    from flowrun.events import Sink
    from flowrun.report import RunReport

app = typer.Typer(
    name="flowrun",
    help="Run YAML/JSON workflow blueprints: DAGs with batch fan-out, retries and resume.",
    add_completion=True,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_P = ParamSpec("_P")


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
    typer.Option(
        "--state-dir",
        metavar="DIR",
        envvar="FLOWRUN_STATE_DIR",
        help="Where run state is kept: DIR/runs/<runId>/ (default .flowrun, or FLOWRUN_STATE_DIR).",
    ),
]
AllowModule = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-module",
        metavar="PREFIX",
        help="Allow only `uses` under PREFIX (a module or package); checked before any import. "
        "Repeatable; default: FLOWRUN_ALLOW_MODULES (comma-separated), else any module.",
    ),
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
    directory: Annotated[
        Path | None,
        typer.Option("-C", metavar="DIR", help="Run as if flowrun was started in DIR."),
    ] = None,
) -> None:
    """flowrun: run workflow blueprints."""
    if directory is not None:
        try:
            os.chdir(directory)
        except OSError as exc:
            print(f"flowrun: error: -C {directory}: {exc.strerror}", file=sys.stderr)
            raise typer.Exit(2) from None


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


def _signals_restored(command: Callable[_P, None]) -> Callable[_P, None]:
    """`command` puts back the SIGINT/SIGTERM handlers it found, however it ends (`_signals`
    leaves `_after_the_run` in place for the printing of the result)."""

    @functools.wraps(command)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        if threading.current_thread() is not threading.main_thread():
            return command(*args, **kwargs)
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        _deferred.clear()
        try:
            return command(*args, **kwargs)
        finally:
            for s, h in old.items():
                if h is not None:  # None: a handler not set from Python, left as it is
                    signal.signal(s, h)

    return wrapper


_deferred: list[int] = []  # the signals `_after_the_run` received


def _after_the_run(signum: int, frame: object) -> None:
    """SIGINT/SIGTERM once the run has ended: the result (the `--json` document, say) is
    printed whole and the run's exit code kept; a second signal exits 130 at once."""
    if _deferred:
        os._exit(130)
    _deferred.append(signum)
    name = signal.Signals(signum).name
    with contextlib.suppress(OSError):  # not `print`: the handler may interrupt a write to stderr
        os.write(2, f"flowrun: {name}: the run has ended; printing its result first "
                    f"({name} again to quit now)\n".encode())  # fmt: skip


def _print_document(text: str) -> None:
    """`print(text)`, written whole even when a signal arrives meanwhile: a write to a pipe
    that a signal interrupts returns short, and `print` drops the rest of a large text."""
    out = sys.stdout
    try:
        fd = out.fileno()
    except (AttributeError, ValueError, OSError):  # not a file (tests capture it in memory)
        print(text)
        return
    data = (text + "\n").encode(out.encoding or "utf-8", out.errors or "strict")
    out.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="Blueprint files to check.")],
    fmt: Annotated[ValidateFormat, typer.Option("--format", help="Output format.")] = (
        ValidateFormat.text
    ),
    no_import: Annotated[
        bool,
        typer.Option(
            "--no-import", help="Do not import the node modules (a static check; runs no code)."
        ),
    ] = False,
    allow_module: AllowModule = None,
) -> None:
    """Check blueprints without running them; print every problem at once (exit 2 if any)."""
    from flowrun import api
    from flowrun.display.streams import reserve_stdout

    # Importing node modules may print: stdout carries the report alone.
    _work_starts()
    with reserve_stdout(True):
        allow = allow_module or ()
        per_file = [(f, api.check_file(f, imports=not no_import, allow=allow)) for f in files]
    problems = []
    for f, checked in per_file:
        found = checked.problems
        problems += found
        if fmt is ValidateFormat.text:
            for p in found:
                print(p)
            if not found:
                pools = checked.pools
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
    _exit(2 if errors else 0)


@app.command()
def graph(
    file: FileArg,
    fmt: Annotated[GraphFormat, typer.Option("--format", help="Output format.")] = (
        GraphFormat.ascii
    ),
    expand: Annotated[
        bool, typer.Option("--expand", help="Draw each subflow's blueprint inside it.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Print the expanded DAG (batches as scatter / worker / gather)."""
    from flowrun import api, diagram

    try:
        g = api.load(file)
    except FlowrunError as exc:
        _fail(exc, debug)
    sys.stdout.write(diagram.render(g, fmt.value, expand=expand))


@app.command("schema")
def schema_cmd() -> None:
    """Print the blueprint JSON Schema (for editors and other tools)."""
    from flowrun.blueprint import schema

    sys.stdout.write(schema.schema_text())


@app.command()
@_signals_restored
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
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan (run/reuse/skip per node); run nothing."),
    ] = False,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target", metavar="NODE", help="Run only NODE and what it needs. Repeatable."
        ),
    ] = None,
    allow_module: AllowModule = None,
    rerun_from: Annotated[
        list[str] | None,
        typer.Option(
            "--from",
            metavar="NODE",
            help="With --resume: re-run NODE and everything after it. Repeatable.",
        ),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option("--junit", metavar="FILE", help="Write a JUnit XML report to FILE."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Run a blueprint. Exit 0 completed, 1 failed, 2 invalid input, 130 interrupted."""
    from flowrun import api
    from flowrun.display.streams import reserve_stdout

    mode, reporter = _display(quiet=quiet, no_progress=no_progress)
    failures = None  # the CI record: kept only when something reads it
    if junit is not None or os.environ.get("GITHUB_ACTIONS") == "true":
        from flowrun import ci

        failures = ci.Failures()
    # With --json stdout holds the document alone: whatever nodes (or their modules, at import
    # time, or their children) write to it goes to stderr until the document is printed.
    try:
        with reserve_stdout(as_json):
            r, report = _run(file, reporter, events, debug, failures, api.RunOptions(
                concurrency=concurrency,
                sets=sets or (),
                context_file=str(context) if context else None,
                fail_fast=fail_fast,
                executor=executor.value,
                address=address,
                resume=resume,
                allow_changed=allow_changed,
                state_dir=state_dir,
                targets=targets or (),
                rerun_from=rerun_from or (),
                dry_run=dry_run,
                allow_modules=allow_module or (),
            ))  # fmt: skip
    except _Planned as planned:  # printed once stdout is stdout again
        _print_plan(planned.plan, as_json)
        raise typer.Exit(0) from None
    reporter.summary()
    _print_unannounced(report.errors, reporter.record)
    if failures is not None:
        _ci_outputs(r, report, failures, junit)
    if mode in ("live", "plain") and report.status in ("failed", "cancelled"):
        print(f"resume with: {resume_command(file, report.run_id, state_dir)}", file=sys.stderr)
    if as_json:
        _print_document(report.to_json())
    elif mode != "quiet":
        _print_results(r, report)
    _exit(report.exit_code, teardown=executor is not ExecutorKind.thread)


def _display(*, quiet: bool, no_progress: bool) -> "tuple[Mode, Reporter]":
    """The progress mode and its sink. rich is imported only when it may draw a live display
    (stderr is a terminal, or the environment makes rich call it one)."""
    from flowrun.display import plain

    mode = plain.quick_mode(sys.stderr, quiet=quiet, no_progress=no_progress, env=os.environ)
    if mode is not None:
        console: plain.Out = plain.PlainConsole()
        # --no-progress hides the display, not the run's errors: they print as --quiet's do.
        line = "quiet" if mode == "off" else mode
        reporter = plain.make_line_reporter(
            line, console, get_time=time.monotonic, wall_clock=time.time
        )
        assert reporter is not None
        return mode, reporter
    from rich.console import Console

    from flowrun.display.live import choose_mode, make_reporter

    rich_console = Console(stderr=True)
    mode = choose_mode(rich_console, quiet=quiet, no_progress=no_progress, env=os.environ)
    return mode, make_reporter("quiet" if mode == "off" else mode, rich_console)


def resume_command(file: Path, run_id: str, state_dir: Path) -> str:
    """`flowrun run FILE --resume RUN_ID` (with `--state-dir` when it is not the default)."""
    import shlex

    cmd = f"flowrun run {shlex.quote(str(file))} --resume {shlex.quote(run_id)}"
    if Path(state_dir) != Path(".flowrun"):
        cmd += f" --state-dir {shlex.quote(str(state_dir))}"
    return cmd


class _Planned(Exception):
    """A dry run's plan, carried out of the block that keeps stdout for the document."""

    def __init__(self, plan: dict[str, object]) -> None:
        super().__init__("dry run")
        self.plan = plan


def _run(
    file: Path,
    reporter: "Reporter",
    events: Path | None,
    debug: bool,
    failures: "Sink | None",
    options: "RunOptions",
) -> "tuple[Run, RunReport]":
    """Prepare and drive the run with the display, the CI record and the --events file
    attached; a dry run prints its plan and exits 0."""
    from flowrun import api
    from flowrun.eventlog import EventLog

    log = None
    try:
        log = EventLog(events) if events is not None and not options.dry_run else None
        options.sinks = [s for s in (reporter, log, failures) if s is not None]
        with api.Run(file, options) as r:
            if options.dry_run:
                raise _Planned(r.plan())
            with _signals(r, reporter), reporter:
                _work_starts()
                return r, r.start()
    except FlowrunError as exc:
        _fail(exc, debug)
    finally:
        if log is not None:
            try:
                log.close()
            except FlowrunError as exc:  # the run's record is in the store; its lines are not
                _fail(exc, debug)


def _print_plan(plan: dict[str, object], as_json: bool) -> None:
    if as_json:
        _print_document(json.dumps(plan, indent=2))
        return
    nodes: dict[str, dict[str, object]] = plan["nodes"]  # type: ignore[assignment]
    resumed = f" (resuming {plan['runId']})" if plan["runId"] else ""
    print(f"plan for {plan['blueprint']}{resumed}: nothing is run")
    width = max(len(n) for n in nodes)
    for node, entry in nodes.items():
        notes = [str(entry[k]) for k in ("reason",) if k in entry]
        if "itemsReused" in entry:
            notes.append(f"{entry['itemsReused']} items reused")
        note = f"  ({', '.join(notes)})" if notes else ""
        print(f"  {entry['plan']:<6} {node:<{width}}{note}".rstrip())


def _ci_outputs(r: object, report: object, failures: object, junit: Path | None) -> None:
    """GitHub Actions annotations and step summary, and the --junit file."""
    from flowrun import ci

    assert isinstance(failures, ci.Failures)
    graph = r.full_graph  # type: ignore[attr-defined]
    if os.environ.get("GITHUB_ACTIONS") == "true":
        ci.github_report(report, failures, ci.locator(graph), sys.stderr)  # type: ignore[arg-type]
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            try:
                with open(summary, "a", encoding="utf-8") as fh:
                    fh.write(ci.summary_markdown(report, failures))  # type: ignore[arg-type]
            except OSError as exc:
                print(f"flowrun: cannot write GITHUB_STEP_SUMMARY {summary}: {exc}",
                      file=sys.stderr)  # fmt: skip
    if junit is not None:
        try:
            ci.write_junit(str(junit), report, failures)  # type: ignore[arg-type]
        except OSError as exc:
            print(f"flowrun: cannot write --junit {junit}: {exc.strerror}", file=sys.stderr)


def _print_unannounced(errors: list[dict[str, str]], record: "RunRecord") -> None:
    """A failed run always says why on stderr: errors that no failure event announced to the
    display (so it printed nothing for them) get one line each."""
    seen = {rec.node for rec in record.failures} | set(record.failed_items)
    for e in errors:
        if not e["node"]:  # the run's own error (its state could not be recorded)
            print(f"flowrun: {e['type']}: {e['message']}", file=sys.stderr)
        elif e["node"] not in seen:
            print(f"flowrun: {e['node']} failed: {e['type']}: {e['message']}", file=sys.stderr)


def _print_results(r: "Run", report: "RunReport") -> None:
    """Without --json: the outputs of the final nodes (those no edge leaves), one per line."""
    graph, context = r.prepared.graph, report.context
    encode = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps makes one per call
    lines = []
    for spec in graph.blueprint.nodes:
        key = graph.output_keys[spec.id]
        if not graph.is_final(spec.id) or key not in context:
            continue
        text = encode(context[key])
        lines.append(f"{key}: {text if len(text) <= 500 else text[:497] + '...'}")
    if lines:  # one write for a DAG with thousands of final nodes
        print(_printable("\n".join(lines)))


def _printable(text: str) -> str:
    """`text` with what stdout cannot encode (a lone surrogate a node returned) escaped."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an encoding Python does not know: print as it is
        pass
    return text


@contextlib.contextmanager
def _signals(r: "Run", reporter: "Reporter") -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): stop starting work, let running nodes finish, save, exit 130.
    Second: exit 130 at once (the terminal is restored first)."""

    def handler(signum: int, frame: object) -> None:
        if r.cancelled.is_set():
            with contextlib.suppress(Exception):
                reporter.stop()
            from flowrun.std.shell import kill_all

            kill_all()  # shell nodes run in sessions of their own: they would outlive us
            os._exit(130)
        print("flowrun: interrupted; finishing running nodes (Ctrl-C again to quit now)",
              file=sys.stderr)  # fmt: skip
        r.cancel()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)
    try:
        yield
    finally:  # the run has ended: its result is printed whole (`run` restores the handlers)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _after_the_run)


#: set by `main()`: the console script may end without the interpreter's teardown; tests
#: that call `app` in-process never do
_fast_exit = False


def _work_starts() -> None:
    """The console script starts with the cyclic garbage collector off (`entry.main`): the
    start-up, imports, the blueprint, the store, makes many objects and hardly any cycles, and
    the collector walked them over and over as they were made. The work runs with it on, and
    with what the start-up made (modules, classes, the graph: alive to the end) frozen out of
    its walks."""
    if _fast_exit:  # the console script; in-process callers keep their collector as it is
        gc.freeze()
        gc.enable()


def _exit(code: int, *, teardown: bool = False) -> NoReturn:
    """Exit without waiting for abandoned node threads (a cancelled or timed-out attempt that
    never returns must not keep the process alive).

    Callers have closed everything that holds data (the store, the --events file, the
    display); what is left is freeing memory, which the operating system does faster than
    the interpreter's teardown (tens of milliseconds after a run, more after a large
    validate). `teardown=True` keeps the ordinary exit (the process and Dask backends clean
    up in atexit handlers)."""
    try:  # here, where a signal waits for the output (see `_after_the_run`)
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let Python report it as it always does
        if code != 130:
            raise typer.Exit(code) from None
    if code == 130 or (_fast_exit and not teardown):
        shell = sys.modules.get("flowrun.std.shell")
        if shell is not None:  # a command still running was abandoned (it timed out): it runs
            shell.kill_all()  # in a session of its own, so it would outlive us
        os._exit(code)
    raise typer.Exit(code)


runs_app = typer.Typer(
    help="List, inspect and clean up past runs.",
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    state_dir: StateDir = Path(".flowrun"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, metavar="N", help="How many runs.")
    ] = 20,
    debug: Debug = False,
) -> None:
    """List recent runs (newest first) with their status, for `run --resume`."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = state_dir
        return
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


SubStateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", metavar="DIR", help="Where run state is kept (default: .flowrun)."),
]


def _state_dir(ctx: typer.Context, given: Path | None) -> Path:
    """The subcommand's --state-dir, else the one given to `runs`, else .flowrun."""
    if given is not None:
        return given
    return ctx.obj if isinstance(ctx.obj, Path) else Path(".flowrun")


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id, or 'latest'.")],
    state_dir: SubStateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    logs: Annotated[
        str | None,
        typer.Option("--logs", metavar="NODE", help="Print what NODE (or item B[3]) printed."),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", metavar="FILE", help="Write a self-contained HTML report."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Show one past run: status, timings, each node's status and error, captured output."""
    from flowrun import store
    from flowrun.runs import show

    where = _state_dir(ctx, state_dir)
    try:
        details = store.load_details(where, run_id)
        rid = details.run.meta.run_id
        if logs is not None:
            _print_logs(rid, logs, store.read_logs(where, rid, logs), details, as_json)
            return
        if html is not None:
            _write_html(where, details, html)
            return
    except FlowrunError as exc:
        _fail(exc, debug)
    if as_json:
        print(json.dumps(show.document(details), indent=2, allow_nan=False))
    else:
        print(show.text(details))


def _print_logs(
    run_id: str, node: str, found: list[tuple[int, str]], details: object, as_json: bool
) -> None:
    from flowrun.errors import UsageError

    if as_json:
        print(json.dumps([{"attempt": a, "text": t} for a, t in found], indent=2))
        return
    if not found:
        from flowrun.errors import did_you_mean as suggest

        logged = details.logged  # type: ignore[attr-defined]
        known = (f" (nodes with output: {', '.join(list(logged)[:10])})" if logged
                 else " (no node of this run printed anything)")  # fmt: skip
        raise UsageError(f"run {run_id}: no captured output for '{node}'"
                         f"{suggest(node, list(logged))}{known}")  # fmt: skip
    for attempt, text in found:
        if len(found) > 1:
            print(f"--- {node} attempt {attempt} ---")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _write_html(where: Path, details: object, out: Path) -> None:
    from flowrun import store
    from flowrun.errors import StateError
    from flowrun.runs import html

    rid = details.run.meta.run_id  # type: ignore[attr-defined]
    # Failed nodes and items first; a bounded number of entries keeps the page openable.
    logged = list(details.logged)  # type: ignore[attr-defined]
    logs = {node: store.read_logs(where, rid, node) for node in logged[:200]}
    try:
        out.write_text(html.render(details, logs), encoding="utf-8")  # type: ignore[arg-type]
    except OSError as exc:
        raise StateError(f"cannot write {out}: {exc}") from exc
    print(f"wrote {out}", file=sys.stderr)


@runs_app.command("clean")
def runs_clean(
    ctx: typer.Context,
    keep: Annotated[
        int | None,
        typer.Option("--keep", min=0, metavar="N", help="Keep the newest N runs."),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", metavar="DURATION", help="Delete only runs older than this (30d, 12h)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted; delete nothing.")
    ] = False,
    state_dir: SubStateDir = None,
    debug: Debug = False,
) -> None:
    """Delete old runs' state. A run that another flowrun process holds is never deleted."""
    from flowrun.runs import clean

    where = _state_dir(ctx, state_dir)
    try:
        age = clean.parse_age(older_than) if older_than is not None else None
        decisions = clean.plan(where, keep, age)
        deleted = kept = 0
        for d in decisions:
            if not d.delete:
                kept += 1
                continue
            if dry_run:
                print(f"would delete {d.run.run_id}  {d.run.blueprint_id}  {d.run.status}")
                deleted += 1
            elif clean.delete(where, d.run.run_id):
                print(f"deleted {d.run.run_id}  {d.run.blueprint_id}  {d.run.status}")
                deleted += 1
            else:
                print(f"kept {d.run.run_id}: in use by another flowrun process", file=sys.stderr)
                kept += 1
    except FlowrunError as exc:
        _fail(exc, debug)
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {deleted} run{'s' * (deleted != 1)}, kept {kept}", file=sys.stderr)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def main() -> None:
    """Console-script entry point."""
    global _fast_exit
    _fast_exit = True
    _app_for(sys.argv)(prog_name="flowrun")


def _app_for(argv: list[str]) -> typer.Typer:
    """`app`, or when the line starts with a command name, `app` with only that command.

    Typer builds the click command of every command (their parameters read from the function
    signatures) before it parses anything; a one-shot `flowrun run` needs only its own, and
    the root options cannot come after the command name, so nothing else of the line can ask
    for the others. Shell completion always gets the whole app."""
    import copy

    from typer.main import get_command_name

    name = argv[1] if len(argv) > 1 else ""
    if os.environ.get("_FLOWRUN_COMPLETE"):
        return app
    commands = [
        c
        for c in app.registered_commands
        if (c.name or get_command_name(c.callback.__name__ if c.callback else "")) == name
    ]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app  # an option, a typo (click names the choices) or nothing: the whole app
    one = copy.copy(app)
    one.registered_commands = commands
    one.registered_groups = groups
    return one


if __name__ == "__main__":  # pragma: no cover
    main()
