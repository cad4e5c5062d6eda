"""Pools (SPEC §12): the token bucket on a fake clock, validation, and an HTTP fan-out."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import flowrun.api
from flowrun import events as ev
from flowrun.blueprint import loader, schema
from flowrun.diagram import render
from flowrun.engine.expand import expand
from flowrun.engine.pools import Pools
from flowrun.errors import BlueprintError

ROOT = Path(__file__).resolve().parent.parent

BP = """id: p
pools:
  api: {concurrency: 3, rate: 10/s, burst: 2}
  slow: {rate: 60/m}
nodes:
  - id: a
    uses: builtins.abs
    config: {pool: api}
  - id: b
    uses: builtins.abs
"""


def graph_of(tmp: Path, text: str = BP):  # type: ignore[no-untyped-def]
    path = tmp / "p.yaml"
    path.write_text(text)
    return expand(schema.check(loader.load(path)))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_then_refills_at_the_rate(tmp_path: Path) -> None:
    clock, seen = FakeClock(), []
    pools = Pools(graph_of(tmp_path), clock, seen.append)
    assert pools.room("b") > 1000  # no pool: only --concurrency applies
    assert pools.room("a") == 2  # the burst
    pools.started("a", 2)
    assert pools.room("a") == 0
    assert pools.wake_at() == pytest.approx(100.1)  # the next token
    assert pools.wake_at() is None  # forgotten until someone waits again
    assert [(e.node, e.pool, e.rate) for e in seen if isinstance(e, ev.PoolWaiting)] == [
        ("a", "api", "10/s")
    ]
    clock.now = 100.05
    assert pools.room("a") == 0
    clock.now = 100.1
    assert pools.room("a") == 1
    clock.now = 110.0  # a long quiet spell refills only up to the burst
    assert pools.room("a") == 1  # 2 tokens, but 2 of the 3 slots are taken
    pools.finished("a", 2)
    assert pools.room("a") == 2
    assert len(seen) == 1  # said once per node


def test_concurrency_alone_needs_no_timer(tmp_path: Path) -> None:
    text = BP.replace("rate: 10/s, burst: 2", "rate: 1000/s, burst: 10")
    pools = Pools(graph_of(tmp_path, text), FakeClock())
    pools.started("a", 3)
    assert pools.room("a") == 0 and pools.wake_at() is None


def test_rates_per_minute_and_hour(tmp_path: Path) -> None:
    g = graph_of(tmp_path)
    assert g.blueprint.pools["slow"].rate == pytest.approx(1.0)
    assert schema.parse_rate("3600/h") == pytest.approx(1.0)
    with pytest.raises(ValueError):
        schema.parse_rate("0/s")


def test_unknown_pool_and_bad_rate_are_reported_together(tmp_path: Path) -> None:
    text = BP.replace("config: {pool: api}", "config: {pool: apu}") + (
        "  - id: c\n    batch: {uses: builtins.abs, inputKey: xs, pool: nope}\ncontext: {xs: []}\n"
    )
    text = text.replace("rate: 60/m", "rate: 60/d")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    found = flowrun.api.validate_file(path)
    assert [(p.line, p.code) for p in found] == [
        (4, "schema.pattern"),
        (8, "unknown-pool"),
        (12, "unknown-pool"),
    ]
    assert "N/s, N/m or N/h" in found[0].message
    assert "(did you mean 'api'?)" in found[1].message
    with pytest.raises(BlueprintError):
        flowrun.api.load(path)


def test_graph_and_validate_show_the_pool(tmp_path: Path) -> None:
    g = graph_of(tmp_path)
    assert "a  uses builtins.abs [pool api: 3 at once, 10/s (burst 2)]" in render(g, "ascii")
    assert '"pool": "api"' in render(g, "json")
    assert flowrun.api.pool_lines(tmp_path / "p.yaml") == [
        "api: 3 at once, 10/s (burst 2)",
        "slow: 60/m",
    ]


# -- the example: an HTTP fan-out against a local server ------------------------------------


class _Server:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[float] = []
        self.active = self.most = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner.lock:
                    owner.starts.append(time.monotonic())
                    owner.active += 1
                    owner.most = max(owner.most, owner.active)
                time.sleep(0.01)
                body = self.path.encode()
                self.send_response(404 if self.path == "/missing" else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with owner.lock:
                    owner.active -= 1

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join()


def test_http_fanout_example_keeps_the_pool(tmp_path: Path, server: _Server) -> None:
    for name in ("fanout.yaml", "fanout.py"):
        shutil.copy(ROOT / "blueprints" / name, tmp_path / name)
    (tmp_path / "data").mkdir()
    paths = [f"/u{i}" for i in range(24)] + ["/missing"]
    base = f"http://127.0.0.1:{server.port}"
    (tmp_path / "data" / "urls.txt").write_text("".join(f"{base}{p}\n" for p in paths))
    report = flowrun.api.run(
        tmp_path / "fanout.yaml", state_dir=tmp_path / ".flowrun", concurrency=8
    )
    assert report.status == "completed"
    out = (tmp_path / "data" / "fetched.jsonl").read_text().splitlines()
    assert out[-1] == "null" and len(out) == len(paths)
    assert all(f'"url":"{base}{p}"' in line for p, line in zip(paths, out[:-1], strict=False))
    assert report.errors[-1]["node"] == "fetch[24]"  # the 404, after its retry
    assert server.most <= 4
    # The bucket holds one token and refills 20 a second: start k is never before k/20 s
    # (less the jitter of request set-up, which the first request may pay more of).
    first = server.starts[0]
    assert all(t - first >= k / 20 - 0.02 for k, t in enumerate(server.starts))


def test_a_batch_waiting_on_its_rate_says_so(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from flowrun.display.live import _batch_detail, make_reporter

    path = tmp_path / "w.yaml"
    path.write_text(
        "id: w\ncontext: {xs: [1, 2, 3]}\npools:\n  api: {rate: 200/s}\nnodes:\n"
        "  - id: B\n    batch: {uses: builtins.abs, inputKey: xs, pool: api}\n"
    )
    console = Console(file=io.StringIO(), width=100, color_system=None)
    reporter = make_reporter("plain", console)
    seen: list[ev.Event] = []
    flowrun.api.run(path, state_dir=tmp_path / ".flowrun", sinks=[reporter, seen.append])
    waits = [e for e in seen if isinstance(e, ev.PoolWaiting)]
    assert [(e.node, e.pool, e.rate) for e in waits] == [("B", "api", "200/s")]
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert any(line.split()[1:3] == ["B", "waiting"] and "on pool api: 200/s" in line
               for line in text.splitlines())  # fmt: skip
    batch = reporter.record.batches["B"]
    batch.finished_at = None  # as while it runs
    assert "waiting on pool api: 200/s" in _batch_detail(batch, {}, 0.0).plain
