"""flowrun benchmarks: whole `flowrun` processes against plain-Python baselines doing the same work.

    python bench/run.py                  # everything, ~3-4 min on 2 cores: bench/RESULTS.md
    python bench/run.py --quick          # fewer sizes and repetitions: a smoke run
    python bench/run.py --only W1,events

Workloads (keys for --only):
  W1        no-op batch of N items (1k ... 1M) at concurrency 8, vs ThreadPoolExecutor.map
  W2        1,000 items that each sleep 20 ms at concurrency 10 and 50: batch makespan vs the
            ideal N*t/c and vs the baseline's map (and the same with an `async def` worker);
            then 20,000 such items at concurrency 1000, a `def` worker against the baseline
            and an `async def` one against bench/async_peer.py (asyncio.gather + semaphore)
  W3        three chained batches of ~50 us pure-Python items over 10,000 items, concurrency 8
  startup   `flowrun --version` and `flowrun validate blueprints/batch-workflow.yaml`,
            against `python -c pass`
  oneshot   `flowrun run blueprints/batch-workflow.yaml --no-progress` (3 items), against
            bench/oneshot_peer.py: PyYAML + the same functions on a ThreadPoolExecutor
  validate  `flowrun validate` of generated 10,000-node blueprints (a chain and a wide fan),
            against parsing the same YAML with PyYAML; the schema cache is off (a cold check)
  dag       2,000 independent task nodes, against bench/dag_peer.py: PyYAML + graphlib +
            ThreadPoolExecutor
  events    W1 at 100k items with `--events FILE` against the same run without it
  store     W1 at 100k items with the durable store against a store that records nothing
  capture   W1 at 100k items with node output capture against capture switched off
  live      W1 at 50k items on a real pseudo-terminal: live display against --no-progress
  composition  a batch of 10,000 one-node subflows against the function as the worker; a
            loop of 10,000 no-op iterations against one of 10

Every flowrun run is `python -m flowrun run FILE --no-progress --state-dir <fresh dir>`: the
defaults a user gets otherwise (the durable store is always on), display off. The schema
cache (`FLOWRUN_CACHE_DIR`) is a directory of this bench run, so warm-up runs fill it as a
user's earlier runs would; the 10,000-node validate rows turn it off. Variants
of one workload alternate (A B B A ...); the table shows medians and the ratio of medians, and
the notes the range of the per-repetition ratios. The full run writes bench/RESULTS.md;
--quick and --only write bench/out/RESULTS.md unless --output says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import measure
import workloads
from measure import SCRATCH, Command, Series, alternate, expect_line, number_after, require_line

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
GB_KB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and repetitions; `FULL` takes about 3-4 minutes on 2 cores."""

    reps: int
    w1_sizes: tuple[int, ...]
    w1_huge_reps: int  # for sizes of 1M and more: one run takes ~15 s
    w2_items: int
    w2_concurrency: tuple[int, ...]
    w3_items: int
    startup_reps: int
    validate_nodes: int
    events_items: int
    live_items: int = 50_000
    w2_high_items: int = 20_000
    w2_high_concurrency: int = 1_000
    subflow_items: int = 10_000
    dag_nodes: int = 2_000


FULL = Plan(5, (1_000, 10_000, 100_000, 1_000_000), 2, 1_000, (10, 50), 10_000, 10, 10_000, 100_000)
QUICK = Plan(
    2, (1_000, 10_000), 1, 200, (50,), 2_000, 3, 2_000, 10_000, 5_000, 2_000, 500, 4_000, 200
)

W2_SLEEP_S = 0.02
W2_TARGET = 1.05  # makespan / ideal
W2_HIGH_TARGET = 1.2  # c=1000: flowrun makespan / its peer's
W2_HIGH_RSS_KB = 100 * 1024  # c=1000 with an async def worker: peak RSS
VALIDATE_TARGET = 1.5  # flowrun validate / a plain YAML load of the same file
RSS_LIMIT_KB = GB_KB  # 1M items must stay under 1 GB
HUGE = 1_000_000  # W1 sizes from here on: fewer repetitions, no warm-up


@dataclass(slots=True)
class Row:
    workload: str
    flowrun_s: float
    baseline_s: float | None
    notes: list[str] = field(default_factory=list)
    unit: Callable[[float | None], str] = field(default=lambda s: _secs(s))

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline_s else self.flowrun_s / self.baseline_s


@dataclass(slots=True)
class Context:
    plan: Plan
    workdir: Path
    spin: int
    spin_us: float
    raw: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def keep(self, label: str, series: Mapping[str, Series]) -> None:
        """Remember every sample (and what `inspect` read, in seconds) for RESULTS.md."""
        raw = self.raw[label] = {}
        for name, s in series.items():
            raw[name] = s.walls
            for key in s.samples[0].extra if s.samples else ():
                if key.endswith("_s"):
                    raw[f"{name} {key}"] = [x.extra[key] for x in s.samples]


# -- commands ---------------------------------------------------------------------------------
def flowrun_bin() -> list[str]:
    """The `flowrun` console script next to this interpreter (what a user types)."""
    script = Path(PY).with_name("flowrun")
    return [str(script)] if script.exists() else [PY, "-m", "flowrun"]


def flowrun_run(
    blueprint: Path,
    concurrency: int,
    *extra: str,
    inspect: Callable[[Path, str], Mapping[str, float]] | None = None,
) -> Command:
    argv = [PY, "-m", "flowrun", "run", str(blueprint), "--no-progress"]
    argv += ["--state-dir", f"{SCRATCH}/state", "-c", str(concurrency), *extra]
    return Command(argv, blueprint.parent, inspect)


def baseline(ctx: Context, n: int, concurrency: int, stages: list[str], *extra: str) -> Command:
    argv = [PY, str(BENCH / "baseline.py"), str(ctx.workdir), str(n), str(concurrency)]
    argv += [*stages, *extra]
    return Command(argv, ctx.workdir, _baseline_inspect(n))


def _baseline_inspect(n: int) -> Callable[[Path, str], Mapping[str, float]]:
    def inspect(scratch: Path, stdout: str) -> Mapping[str, float]:
        require_line(stdout, f"count: {n}")
        return {"map_s": number_after(stdout, "map_s:")}

    return inspect


def _events_inspect(n: int, batch: str | None) -> Callable[[Path, str], Mapping[str, float]]:
    """Check the result line, and read the events file: its size, its line count and (for
    `batch`) the batch makespan, batch_started to batch_finished."""

    def inspect(scratch: Path, stdout: str) -> Mapping[str, float]:
        require_line(stdout, f"count: {n}")
        path = scratch / "events.jsonl"
        out = {"events": 0.0, "bytes": float(path.stat().st_size)}
        started = finished = None
        with path.open(encoding="utf-8") as f:
            for line in f:
                out["events"] += 1
                if batch is not None and f'"node":"{batch}"' in line:
                    event = json.loads(line)
                    if event["event"] == "batch_started":
                        started = event["ts"]
                    elif event["event"] == "batch_finished":
                        finished = event["ts"]
        if batch is not None:
            if started is None or finished is None:
                raise measure.BenchError(f"no batch_started/batch_finished for {batch} in {path}")
            out["makespan_s"] = finished - started
        return out

    return inspect


# -- workloads --------------------------------------------------------------------------------
def w1(ctx: Context) -> list[Row]:
    """Sizes below 1M run interleaved in one alternation, so the per-item slope between two
    sizes compares runs made close together; 1M and up run apart, with fewer repetitions."""
    small = [n for n in ctx.plan.w1_sizes if n < HUGE]
    huge = [n for n in ctx.plan.w1_sizes if n >= HUGE]
    rows = []
    res_small = _w1_group(ctx, small, ctx.plan.reps, warmup=True)
    rows += [_w1_row(n, res_small) for n in small]
    for n in huge:  # no warm-up run (~15 s each): the smaller sizes warmed the caches up
        rows.append(_w1_row(n, _w1_group(ctx, [n], ctx.plan.w1_huge_reps, warmup=False)))
    if len(small) >= 2:
        rows.append(_done(_w1_marginal(small[-2], small[-1], res_small)))
    return rows


def _w1_group(ctx: Context, sizes: list[int], reps: int, *, warmup: bool) -> dict[str, Series]:
    cmds: dict[str, Command] = {}
    for n in sizes:
        bp = workloads.write_w1(ctx.workdir, n)
        cmds[f"flowrun {n}"] = flowrun_run(bp, 8, inspect=expect_line(f"count: {n}"))
        cmds[f"baseline {n}"] = baseline(ctx, n, 8, ["noop"])
    res = alternate(cmds, reps, warmup=warmup) if sizes else {}
    if sizes:
        ctx.keep(f"W1 no-op batch, c=8: {', '.join(f'{n:,}' for n in sizes)} items", res)
    return res


def _w1_row(n: int, res: Mapping[str, Series]) -> Row:
    fl, bl = res[f"flowrun {n}"], res[f"baseline {n}"]
    row = Row(f"W1 no-op batch, {n:,} items, c=8", fl.wall, bl.wall)
    row.notes.append(f"{(fl.wall - bl.wall) / n * 1e6:+.2f} µs/item")
    row.notes.append(f"peak RSS {_mb(fl.rss_kb)} vs {_mb(bl.rss_kb)}")
    if n >= HUGE and fl.rss_kb is not None:
        ok = "ok" if fl.rss_kb <= RSS_LIMIT_KB else "OVER"
        row.notes.append(f"flowrun RSS ≤ 1 GB: {ok}")
    row.notes.append(_spread(res, f"flowrun {n}", f"baseline {n}"))
    return _done(row)


def _w1_marginal(n1: int, n2: int, res: Mapping[str, Series]) -> Row:
    """Per-item cost as the slope between two sizes (median over repetitions), and the fixed
    cost as the intercept: separates start-up and tear-down from what grows with the batch."""
    slope, fixed = {}, {}
    for side in ("flowrun", "baseline"):
        a, b = res[f"{side} {n1}"].walls, res[f"{side} {n2}"].walls
        slope[side] = statistics.median((y - x) / (n2 - n1) for x, y in zip(a, b, strict=True))
        fixed[side] = statistics.median(a) - slope[side] * n1
    label = f"W1 marginal cost per item ({n1:,}→{n2:,} slope)"
    row = Row(label, slope["flowrun"], slope["baseline"], unit=_micros)
    row.notes.append(
        f"fixed cost (intercept): flowrun {_secs(fixed['flowrun'])}, "
        f"baseline {_secs(fixed['baseline'])}"
    )
    return row


def w2(ctx: Context) -> list[Row]:
    n = ctx.plan.w2_items
    bp = workloads.write_w2(ctx.workdir, n, W2_SLEEP_S)
    bp_async = workloads.write_w2(ctx.workdir, n, W2_SLEEP_S, "anap")
    rows = []
    for c in ctx.plan.w2_concurrency:
        ideal = n * W2_SLEEP_S / c
        events = ("--events", f"{SCRATCH}/events.jsonl")
        cmds = {
            "flowrun": flowrun_run(bp, c, *events, inspect=_events_inspect(n, "nap")),
            "baseline": baseline(ctx, n, c, ["nap"], "--seconds", str(W2_SLEEP_S)),
            "async": flowrun_run(bp_async, c, *events, inspect=_events_inspect(n, "nap")),
        }
        res = alternate(cmds, ctx.plan.reps)
        label = f"W2 sleep {W2_SLEEP_S * 1000:g} ms × {n:,}, c={c} (makespan)"
        ctx.keep(label, res)
        fl, bl = res["flowrun"], res["baseline"]
        span, base_span = fl.median_of("makespan_s"), bl.median_of("map_s")
        row = Row(label, span, base_span)
        verdict = "ok" if span / ideal <= W2_TARGET else "OVER"
        row.notes.append(
            f"ideal N·t/c {ideal:.2f} s: flowrun {span / ideal:.3f}× (target ≤ {W2_TARGET}×: "
            f"{verdict}), baseline {base_span / ideal:.3f}×"
        )
        row.notes.append(
            f"whole process {_secs(fl.wall)} vs {_secs(bl.wall)} ({fl.wall / bl.wall:.2f}×)"
        )
        row.notes.append(f"async def worker: {res['async'].median_of('makespan_s') / ideal:.3f}×")
        row.notes.append("makespan = batch_started→batch_finished in the --events file")
        rows.append(_done(row))
    return rows + _w2_high(ctx)


def _w2_high(ctx: Context) -> list[Row]:
    """W2 at concurrency 1000: a `def` worker against the ThreadPoolExecutor baseline, an
    `async def` worker against asyncio.gather + a semaphore; makespans and peak RSS."""
    n, c = ctx.plan.w2_high_items, ctx.plan.w2_high_concurrency
    ideal = n * W2_SLEEP_S / c
    events = ("--events", f"{SCRATCH}/events.jsonl")
    secs = ("--seconds", str(W2_SLEEP_S))
    peer = [PY, str(BENCH / "async_peer.py"), str(ctx.workdir), str(n), str(c), *secs]
    cmds = {
        "def": flowrun_run(workloads.write_w2(ctx.workdir, n, W2_SLEEP_S), c, *events,
                           inspect=_events_inspect(n, "nap")),
        "baseline": baseline(ctx, n, c, ["nap"], *secs),
        "async": flowrun_run(workloads.write_w2(ctx.workdir, n, W2_SLEEP_S, "anap"), c,
                             *events, inspect=_events_inspect(n, "nap")),
        "peer": Command(peer, ctx.workdir, _baseline_inspect(n)),
    }  # fmt: skip
    res = alternate(cmds, ctx.plan.reps)
    ctx.keep(f"W2 c={c}", res)
    rows = []
    for side, base, what, against in (
        ("def", "baseline", "def worker", "baseline (ThreadPoolExecutor)"),
        ("async", "peer", "async def worker", "bench/async_peer.py (asyncio.gather + semaphore)"),
    ):
        fl, bl = res[side], res[base]
        span, base_span = fl.median_of("makespan_s"), bl.median_of("map_s")
        label = f"W2 sleep {W2_SLEEP_S * 1000:g} ms × {n:,}, c={c}, {what} (makespan)"
        row = Row(label, span, base_span)
        verdict = "ok" if span / base_span <= W2_HIGH_TARGET else "OVER"
        row.notes.append(f"baseline: {against}; target ≤ {W2_HIGH_TARGET}×: {verdict}")
        row.notes.append(f"ideal {ideal:.2f} s: flowrun {span / ideal:.2f}×, "
                         f"baseline {base_span / ideal:.2f}×")  # fmt: skip
        rss = f"peak RSS {_mb(fl.rss_kb)} vs {_mb(bl.rss_kb)}"
        if side == "async" and fl.rss_kb is not None:
            rss += f" (≤ 100 MB: {'ok' if fl.rss_kb <= W2_HIGH_RSS_KB else 'OVER'})"
        row.notes.append(rss)
        row.notes.append(f"whole process {_secs(fl.wall)} vs {_secs(bl.wall)} "
                         f"({fl.wall / bl.wall:.2f}×)")  # fmt: skip
        row.notes.append(_spread_of(res, side, base))
        rows.append(_done(row))
    return rows


def _spread_of(res: Mapping[str, Series], a: str, b: str) -> str:
    """The range of the per-repetition makespan ratios."""
    ratios = [
        x.extra["makespan_s"] / y.extra["map_s"]
        for x, y in zip(res[a].samples, res[b].samples, strict=False)
    ]
    if len(ratios) == 1:
        return "1 rep"
    return f"{len(ratios)} reps, ratios {min(ratios):.2f}–{max(ratios):.2f}"


def w3(ctx: Context) -> list[Row]:
    n = ctx.plan.w3_items
    bp = workloads.write_w3(ctx.workdir, n)
    cmds = {
        "flowrun": flowrun_run(bp, 8, inspect=expect_line(f"count: {n}")),
        "baseline": baseline(ctx, n, 8, list(workloads.W3_STAGES)),
    }
    res = alternate(cmds, ctx.plan.reps)
    label = f"W3 3-stage pipeline, {n:,} items × ~{workloads.SPIN_TARGET_US:g} µs, c=8"
    ctx.keep(label, res)
    fl, bl = res["flowrun"], res["baseline"]
    row = Row(label, fl.wall, bl.wall)
    work = 3 * n * ctx.spin_us / 1e6
    row.notes.append(f"item ≈ {ctx.spin_us:.0f} µs here; pure work 3·N·t = {work:.2f} s")
    row.notes.append(f"{(fl.wall - bl.wall) / (3 * n) * 1e6:+.2f} µs/item-stage")
    row.notes.append(f"peak RSS {_mb(fl.rss_kb)} vs {_mb(bl.rss_kb)}")
    row.notes.append(_spread(res, "flowrun", "baseline"))
    return [_done(row)]


def startup(ctx: Context) -> list[Row]:
    fr = flowrun_bin()
    bp = ROOT / "blueprints" / "batch-workflow.yaml"
    cmds = {
        "version": Command([*fr, "--version"], ROOT, _version_inspect),
        "validate": Command([*fr, "validate", str(bp)], ROOT, expect_line(f"{bp}: ok")),
        "floor": Command([PY, "-c", "pass"], ROOT),
    }
    res = alternate(cmds, ctx.plan.startup_reps)
    ctx.keep("startup", res)
    floor = res["floor"].wall
    rows = []
    for name, label in (
        ("version", "startup: flowrun --version"),
        ("validate", "startup: flowrun validate blueprints/batch-workflow.yaml"),
    ):
        row = Row(label, res[name].wall, floor)
        row.notes.append("baseline: python -c pass")
        row.notes.append(f"+{(res[name].wall - floor) * 1000:.0f} ms over the floor")
        row.notes.append(_spread(res, name, "floor"))
        rows.append(_done(row))
    return rows


def oneshot(ctx: Context) -> list[Row]:
    """What a user types once: the console script, a fresh state directory, display off."""
    bp = ROOT / "blueprints" / "batch-workflow.yaml"
    argv = [*flowrun_bin(), "run", str(bp), "--no-progress", "--state-dir", f"{SCRATCH}/state"]
    cmds = {
        "flowrun": Command(argv, ROOT, expect_line("sum-results: 120")),
        "peer": Command(
            [PY, str(BENCH / "oneshot_peer.py"), str(bp)], ROOT, expect_line("sum-results: 120")
        ),
    }
    res = alternate(cmds, ctx.plan.startup_reps)
    label = "one-shot: flowrun run blueprints/batch-workflow.yaml --no-progress (3 items)"
    ctx.keep(label, res)
    row = Row(label, res["flowrun"].wall, res["peer"].wall)
    row.notes.append("baseline: bench/oneshot_peer.py (PyYAML + ThreadPoolExecutor); target ≤ 2×")
    row.notes.append(f"+{(res['flowrun'].wall - res['peer'].wall) * 1000:.0f} ms over the peer")
    row.notes.append(_spread(res, "flowrun", "peer"))
    return [_done(row)]


def dag(ctx: Context) -> list[Row]:
    n = ctx.plan.dag_nodes
    bp = workloads.write_independent(ctx.workdir, n)
    last = f"t{n - 1}: 1"
    cmds = {
        "flowrun": flowrun_run(bp, 8, inspect=expect_line(last)),
        "peer": Command(
            [PY, str(BENCH / "dag_peer.py"), str(bp), "8"], ctx.workdir, expect_line(last)
        ),
    }
    res = alternate(cmds, ctx.plan.reps)
    label = f"DAG: {n:,} independent task nodes, c=8"
    ctx.keep(label, res)
    row = Row(label, res["flowrun"].wall, res["peer"].wall)
    row.notes.append("baseline: bench/dag_peer.py (PyYAML + graphlib + ThreadPoolExecutor)")
    row.notes.append(f"{(res['flowrun'].wall - res['peer'].wall) / n * 1e6:+.0f} µs/node")
    row.notes.append(_spread(res, "flowrun", "peer"))
    return [_done(row)]


def _version_inspect(scratch: Path, stdout: str) -> Mapping[str, float]:
    if not stdout.startswith("flowrun "):
        raise measure.BenchError(f"unexpected --version output {stdout!r}")
    return {}


def validate(ctx: Context) -> list[Row]:
    n = ctx.plan.validate_nodes
    fr = flowrun_bin()
    files = {
        "chain": workloads.write_chain(ctx.workdir, n),
        "fan": workloads.write_fan(ctx.workdir, n),
    }
    parse = (
        "import sys, yaml; "
        "yaml.load(open(sys.argv[1], 'rb'), Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader))"
    )
    cmds: dict[str, Command] = {}
    cold = {**measure.base_env(), "FLOWRUN_CACHE_DIR": ""}  # every run checks the schema
    for kind, path in files.items():
        ok = expect_line(f"{path}: ok")
        cmds[kind] = Command([*fr, "validate", str(path)], ctx.workdir, ok, env=cold)
        cmds[f"{kind}-yaml"] = Command([PY, "-c", parse, str(path)], ctx.workdir)
    res = alternate(cmds, ctx.plan.reps)
    ctx.keep("validate", res)
    batches = {k: p.read_text(encoding="utf-8").count("    batch:") for k, p in files.items()}
    shapes = {
        "chain": f"validate {n:,}-node chain ({batches['chain']} batches)",
        "fan": f"validate {n:,}-node wide fan, all reading `start` ({batches['fan']} batches)",
    }
    rows = []
    for kind, label in shapes.items():
        fl = res[kind]
        row = Row(label, fl.wall, res[f"{kind}-yaml"].wall)
        verdict = "ok" if fl.wall <= VALIDATE_TARGET * res[f"{kind}-yaml"].wall else "OVER"
        row.notes.append(f"target ≤ {VALIDATE_TARGET:g}× the YAML load: {verdict}")
        row.notes.append("baseline: python + PyYAML (libyaml) load of the same file")
        row.notes.append("schema cache off")
        row.notes.append(f"{files[kind].stat().st_size / 1e6:.1f} MB of YAML")
        row.notes.append(_spread(res, kind, f"{kind}-yaml"))
        rows.append(_done(row))
    return rows


def events(ctx: Context) -> list[Row]:
    n = ctx.plan.events_items
    bp = workloads.write_w1(ctx.workdir, n)
    cmds = {
        "with": flowrun_run(
            bp, 8, "--events", f"{SCRATCH}/events.jsonl", inspect=_events_inspect(n, None)
        ),
        "without": flowrun_run(bp, 8, inspect=expect_line(f"count: {n}")),
    }
    res = alternate(cmds, ctx.plan.reps)
    label = f"events: W1 {n:,} items with --events FILE"
    ctx.keep(label, res)
    on, off = res["with"], res["without"]
    count = on.median_of("events")
    row = Row(label, on.wall, off.wall)
    row.notes.append("baseline: the same flowrun run without --events")
    row.notes.append(f"{count:,.0f} events, {on.median_of('bytes') / 1e6:.1f} MB")
    row.notes.append(f"{(on.wall - off.wall) / count * 1e6:+.2f} µs/event")
    row.notes.append(f"peak RSS {_mb(on.rss_kb)} vs {_mb(off.rss_kb)}")
    row.notes.append(_spread(res, "with", "without"))
    return [_done(row)]


def store_cost(ctx: Context) -> list[Row]:
    """The durable store on (what every run does) against a store that records nothing."""
    n = ctx.plan.events_items
    bp = workloads.write_w1(ctx.workdir, n)
    off = flowrun_run(bp, 8, inspect=expect_line(f"count: {n}"))
    off = Command([PY, str(BENCH / "without_store.py"), *off.argv[3:]], off.cwd, off.inspect)
    cmds = {"on": flowrun_run(bp, 8, inspect=expect_line(f"count: {n}")), "off": off}
    res = alternate(cmds, ctx.plan.reps)
    label = f"store: W1 {n:,} items, state store on vs off"
    ctx.keep(label, res)
    row = Row(label, res["on"].wall, res["off"].wall)
    row.notes.append("baseline: the same run with a store that records nothing; target ≤ 1.10×")
    row.notes.append(f"peak RSS {_mb(res['on'].rss_kb)} vs {_mb(res['off'].rss_kb)}")
    row.notes.append(_spread(res, "on", "off"))
    return [_done(row)]


def capture_cost(ctx: Context) -> list[Row]:
    """Node output capture on (what every run does) against capture switched off, for nodes
    that print nothing."""
    n = ctx.plan.events_items
    bp = workloads.write_w1(ctx.workdir, n)
    off = flowrun_run(bp, 8, inspect=expect_line(f"count: {n}"))
    off = Command([PY, str(BENCH / "without_capture.py"), *off.argv[3:]], off.cwd, off.inspect)
    cmds = {"on": flowrun_run(bp, 8, inspect=expect_line(f"count: {n}")), "off": off}
    res = alternate(cmds, ctx.plan.reps)
    label = f"capture: W1 {n:,} items, output capture on vs off"
    ctx.keep(label, res)
    row = Row(label, res["on"].wall, res["off"].wall)
    row.notes.append("baseline: the same run without the stream proxies; target ≤ 1.05×")
    row.notes.append(_spread(res, "on", "off"))
    return [_done(row)]


def live_display(ctx: Context) -> list[Row]:
    """A batch on a real pseudo-terminal: the live display against --no-progress."""
    import live

    n = ctx.plan.live_items
    bp = workloads.write_w1(ctx.workdir, n)
    with tempfile.TemporaryDirectory(prefix="flowrun-live-") as scratch:
        on, off = live.live_vs_plain(bp, Path(scratch), ctx.plan.reps)
    row = Row(f"live display: W1 {n:,} items on a pty vs --no-progress", statistics.median(on),
              statistics.median(off))  # fmt: skip
    row.notes.append(f"median of {len(on)} alternating pairs {live.ratio(on, off):.3f}×")
    row.notes.append(f"of which importing rich {live.import_ms(ctx.plan.reps):.0f} ms (fixed)")
    row.notes.append("target ≤ 1.05×")
    return [_done(row)]


def composition(ctx: Context) -> list[Row]:
    """A batch whose worker is a one-node subflow against the same batch with the function as
    the worker; and a loop's cost per iteration (10,000 against 10 iterations)."""
    n = ctx.plan.subflow_items
    fn = workloads.write_w1(ctx.workdir, n)
    sub = workloads.write_subflow_batch(ctx.workdir, n)
    big, small = workloads.write_loop(ctx.workdir, 10_000), workloads.write_loop(ctx.workdir, 10)
    cmds = {
        "subflow": flowrun_run(sub, 8, inspect=expect_line(f"count: {n}")),
        "function": flowrun_run(fn, 8, inspect=expect_line(f"count: {n}")),
        "loop 10000": flowrun_run(big, 8, inspect=expect_line('count: "10000"')),
        "loop 10": flowrun_run(small, 8, inspect=expect_line('count: "10"')),
    }
    res = alternate(cmds, ctx.plan.reps)
    label = f"subflow: a batch of {n:,} one-node subflows vs the function as the worker"
    ctx.keep(label, res)
    s, f = res["subflow"], res["function"]
    row = Row(label, s.wall, f.wall)
    row.notes.append(f"{(s.wall - f.wall) / n * 1e6:+.1f} µs per child (target ≤ 50)")
    row.notes.append(f"peak RSS {_mb(s.rss_kb)} vs {_mb(f.rss_kb)}")
    row.notes.append(_spread(res, "subflow", "function"))
    big_r, small_r = res["loop 10000"], res["loop 10"]
    loop = Row("loop: 10,000 iterations of a no-op body vs 10", big_r.wall, small_r.wall)
    loop.notes.append(f"{(big_r.wall - small_r.wall) / 9990 * 1e6:.1f} µs per iteration")
    loop.notes.append(f"peak RSS {_mb(big_r.rss_kb)} vs {_mb(small_r.rss_kb)}")
    return [_done(row), _done(loop)]


WORKLOADS: dict[str, Callable[[Context], list[Row]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "startup": startup,
    "composition": composition,
    "oneshot": oneshot,
    "validate": validate,
    "dag": dag,
    "events": events,
    "store": store_cost,
    "capture": capture_cost,
    "live": live_display,
}


# -- output -----------------------------------------------------------------------------------
def _secs(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.3f} s"


def _micros(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e6:.2f} µs"


def _mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.0f} MB"


def _spread(res: Mapping[str, Series], a: str, b: str) -> str:
    ratios = measure.paired_ratios(res[a], res[b])
    if len(ratios) == 1:
        return "1 rep"
    return f"{len(ratios)} reps, ratios {min(ratios):.2f}–{max(ratios):.2f}"


def _done(row: Row) -> Row:
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "-"
    print(f"  {row.workload}: {row.unit(row.flowrun_s)} vs {row.unit(row.baseline_s)} ({ratio})",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


HEADERS = ("workload", "flowrun (median)", "baseline (median)", "ratio", "notes")


def _cells(row: Row) -> tuple[str, ...]:
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "-"
    cells = (row.workload, row.unit(row.flowrun_s), row.unit(row.baseline_s), ratio)
    return (*cells, "; ".join(row.notes))


def text_table(rows: list[Row]) -> str:
    cells = [HEADERS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS) - 1)]
    lines = []
    for c in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=False)) + "  " + c[-1])
        if c is HEADERS:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(HEADERS[-1]))
    return "\n".join(lines)


def markdown(rows: list[Row], ctx: Context, header: Mapping[str, str]) -> str:
    out = ["# flowrun benchmark results", ""]
    out += [f"- {k}: {v}" for k, v in header.items()]
    out += [
        "",
        "Whole-process wall time (`time.perf_counter` around the subprocess), medians of "
        "alternating runs; ratio = flowrun / baseline. Baselines: a plain "
        "`ThreadPoolExecutor(max_workers=c)`, `list(ex.map(fn, items))` per stage, then "
        "`len` (bench/baseline.py), unless the notes name another. Peak RSS from "
        "`/usr/bin/time -v`. Regenerate with `make bench`.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---", "---:", "---:", "---:", "---"]) + "|",
    ]
    for row in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    out += ["", "## Raw samples (s, in run order): whole-process wall, then what was read", ""]
    for label, series in ctx.raw.items():
        out.append(f"- {label}")
        for name, walls in series.items():
            out.append(f"  - {name}: " + ", ".join(f"{w:.3f}" for w in walls))
    return "\n".join(out) + "\n"


def environment(mode: str) -> dict[str, str]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "CPUs": str(os.cpu_count()),
        "Python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "flowrun": _flowrun_version() + f", git {_git_rev()}",
        "mode": mode,
        "load average at start": _load(),
    }


def _load() -> str:
    """The 1/5/15-minute load averages: other work on the machine shows up here."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _flowrun_version() -> str:
    out = subprocess.run([*flowrun_bin(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="flowrun benchmarks against plain-Python baselines (see the module doc).",
    )
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    parser.add_argument("--only", help=f"comma-separated workloads to run: {','.join(WORKLOADS)}")
    parser.add_argument("--output", type=Path, help="where to write the Markdown results")
    args = parser.parse_args(argv)
    names = {k.lower(): k for k in WORKLOADS}
    if args.only:
        chosen = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in chosen if w not in names]
        if unknown:
            parser.error(
                f"--only: unknown {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
            )
        args.selected = [names[w] for w in chosen]
    else:
        args.selected = list(WORKLOADS)
    if args.output is None:
        partial = args.quick or args.only
        args.output = BENCH / "out" / "RESULTS.md" if partial else BENCH / "RESULTS.md"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    mode = ("quick" if args.quick else "full") + (f", only {args.only}" if args.only else "")
    header = environment(mode)
    with tempfile.TemporaryDirectory(prefix="flowrun-bench-work-") as tmp:
        os.environ["FLOWRUN_CACHE_DIR"] = os.path.join(tmp, "cache")
        spin, spin_us = workloads.calibrate_spin()
        workdir = Path(tmp)
        workloads.write_nodes(workdir, spin)
        ctx = Context(plan, workdir, spin, spin_us)
        rows: list[Row] = []
        for name in args.selected:
            print(f"{name}...", file=sys.stderr, flush=True)
            rows += WORKLOADS[name](ctx)
    print()
    print(text_table(rows))
    header["load average at end"] = _load()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown(rows, ctx, header), encoding="utf-8")
    print(f"\nwritten to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
