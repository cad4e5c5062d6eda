"""Streamed batches (SPEC §11): items from a file, results to a file, resume without repeats."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import distributed
import pytest

import flowrun.api
from flowrun.engine import outputfile
from flowrun.engine.itemsources import Malformed, iter_items, open_source
from flowrun.engine.outputfile import OrderedWriter

NODES = """
import os

def record(x, log):
    with open(log, "a") as f:
        f.write(f"{x}\\n")
    if os.path.exists(os.path.join(os.path.dirname(log), "fail-" + str(x))):
        raise ValueError(f"told to fail on {x}")
    return {"x": x}

def size(row):
    return len(row)
"""


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def blueprint(tmp: Path, batch: str, name: str = "bp.yaml") -> Path:
    (tmp / "streamnodes.py").write_text(NODES)
    path = tmp / name
    path.write_text(f"id: s\nnodes:\n  - id: B\n    batch: {batch}\n")
    return path


def run(path: Path, **kw: object) -> flowrun.api.RunReport:
    return flowrun.api.run(path, state_dir=path.parent / ".flowrun", **kw)  # type: ignore[arg-type]


def lines(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the sources ----------------------------------------------------------------------------


def test_sources_read_each_format_and_name_the_bad_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('1\n{"k": 2}\nnot json\n[3]')
    got = list(iter_items(open_source("a.jsonl", tmp_path)))
    assert got[:2] == [1, {"k": 2}] and got[3] == [3]
    assert isinstance(got[2], Malformed) and got[2].message.startswith(f"{tmp_path}/a.jsonl:3:")
    (tmp_path / "b.csv").write_text('id,name\n1,"a, b"\n\n2,c,extra\n3,"x\ny"\n', newline="")
    got = list(iter_items(open_source("b.csv", tmp_path)))
    assert got[0] == {"id": "1", "name": "a, b"} and got[2] == {"id": "3", "name": "x\ny"}
    assert isinstance(got[1], Malformed) and "b.csv:4: row has 3 fields" in got[1].message
    (tmp_path / "c.txt").write_text("one\r\ntwo\n\nfour\n")
    assert list(iter_items(open_source("c.txt", tmp_path))) == ["one", "two", "", "four"]
    for name in ("z.csv", "y.csv"):
        (tmp_path / name).write_text("h\n")
    assert list(iter_items(open_source("*.csv", tmp_path))) == [
        str(tmp_path / n) for n in ("b.csv", "y.csv", "z.csv")
    ]


def test_reading_many_lines_at_once_gives_what_reading_each_gives(tmp_path: Path) -> None:
    text = '1\n  {"a": [1, 2]}  \r\n\n"\ufeffx"\nnot json\n1 2\nNaN\n[1,\n"\xe9"\n7'
    (tmp_path / "a.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "a.jsonl").write_bytes((tmp_path / "a.jsonl").read_bytes() + b"\n\xff\n")
    one = open_source("a.jsonl", tmp_path)
    each = [one.read(i) for i in range(one.total)]
    many = open_source("a.jsonl", tmp_path)
    got = many.read_many(list(range(4)))[0] + many.read_many(list(range(4, many.total)))[0]
    assert [repr(v) for v in got] == [repr(v) for v in each]
    assert [i for i, v in enumerate(got) if isinstance(v, Malformed)] == [2, 4, 5, 7, 10]
    skip = open_source("a.jsonl", tmp_path)
    assert skip.read_many([8, 9]) == (["\xe9", 7], False)  # lines before 8 skipped unread
    assert skip.read_many([10, 11])[1]  # the undecodable line, then past the end


def test_a_source_skips_items_it_is_not_asked_for(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(f"{i}\n" for i in range(10)))
    source = open_source("a.jsonl", tmp_path)
    assert source.total == 10
    assert [source.read(i) for i in (0, 3, 4, 9)] == [0, 3, 4, 9]
    source.close()


# -- the output file ------------------------------------------------------------------------


def test_writer_orders_lines_and_resume_cuts_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = OrderedWriter.create(path)
    for i in (2, 0, 3, 1):
        w.put(i, str(i * 10))
    w.close()
    assert lines(path) == [0, 10, 20, 30]
    with open(path, "ab") as f:
        f.write(b'{"torn": ')  # a write cut short by kill -9
    w = OrderedWriter.resume(path, {4: "four"})
    assert w.next == 5  # 0-3 in the file, 4 from the store
    w.put(5, "50")
    w.close()
    assert lines(path) == [0, 10, 20, 30, "four", 50]


def test_resume_reruns_from_the_first_failed_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("1\nnull\n3\nnull\n")
    # line 1 failed; lines after it come back from the store (3 was a real null output)
    w = OrderedWriter.resume(path, {2: 3, 3: None})
    assert w.next == 1
    w.put(1, "2")
    w.close()
    assert lines(path) == [1, 2, 3, None]


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["thread", "process", "dask"])
def test_items_from_a_file_to_a_file_on_each_executor(
    tmp_path: Path, executor: str, address: str
) -> None:
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(40)) + "oops\n")
    log = tmp_path / "calls.log"
    path = blueprint(
        tmp_path,
        "{uses: streamnodes.record, itemsFrom: in.jsonl, outputTo: out.jsonl, maxFailures: 1,"
        f" params: {{log: '{log}'}}}}",
    )
    extra = {"address": address} if executor == "dask" else {}
    report = run(path, executor=executor, concurrency=4, **extra)
    assert report.status == "completed"
    out = tmp_path / "out.jsonl"
    assert report.context["B"] == {"path": str(out), "count": 41, "failed": 1}
    assert lines(out) == [{"x": i} for i in range(40)] + [None]
    assert report.errors[0]["node"] == "B[40]" and "in.jsonl:41:" in report.errors[0]["message"]
    assert report.nodes["B"].items == {"total": 41, "succeeded": 40, "failed": 1}


def test_csv_and_txt_items_without_an_output_file(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n3,4\n")
    path = blueprint(tmp_path, "{uses: streamnodes.size, itemsFrom: rows.csv}")
    assert run(path).context["B"] == [2, 2]
    (tmp_path / "words.txt").write_text("ab\nabc\n")
    path = blueprint(tmp_path, "{uses: builtins.len, itemsFrom: words.txt}", "t.yaml")
    assert run(path).context["B"] == [2, 3]


def test_resume_completes_the_file_without_repeats(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(30)))
    (tmp_path / "fail-17").touch()
    log = tmp_path / "calls.log"
    path = blueprint(
        tmp_path,
        f"{{uses: streamnodes.record, itemsFrom: in.jsonl, outputTo: out.jsonl,"
        f" params: {{log: '{log}'}}}}",
    )
    first = run(path, concurrency=3)
    assert first.status == "failed"
    before = log.read_text().split()
    (tmp_path / "fail-17").unlink()
    again = run(path, concurrency=3, resume=first.run_id)
    assert again.status == "completed"
    assert lines(tmp_path / "out.jsonl") == [{"x": i} for i in range(30)]
    rerun = log.read_text().split()[len(before) :]
    succeeded_before = set(before) - {"17"}
    assert "17" in rerun and not succeeded_before & set(rerun)


def test_a_full_disk_fails_the_batch_and_resume_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(20)))
    path = blueprint(tmp_path, "{uses: builtins.abs, itemsFrom: in.jsonl, outputTo: out.jsonl}")

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out.jsonl")

    monkeypatch.setattr(outputfile.os, "write", full)
    first = run(path)
    assert first.status == "failed"
    assert any("No space left on device" in e["message"] for e in first.errors)
    monkeypatch.undo()
    again = run(path, resume=first.run_id)
    assert again.status == "completed" and lines(tmp_path / "out.jsonl") == list(range(20))


def test_validation_reports_every_file_problem_at_once(tmp_path: Path) -> None:
    (tmp_path / "ok.jsonl").write_text("1\n")
    (tmp_path / "dir.jsonl").mkdir()
    text = (
        "id: v\ncontext: {xs: []}\nnodes:\n"
        "  - id: a\n    batch: {uses: builtins.abs, itemsFrom: missing.jsonl}\n"
        "  - id: b\n    batch: {uses: builtins.abs, itemsFrom: data.json}\n"
        "  - id: c\n    batch: {uses: builtins.abs, itemsFrom: ok.jsonl, outputTo: no/out.jsonl}\n"
        "  - id: d\n    batch: {uses: builtins.abs, itemsFrom: ok.jsonl, outputTo: out.json}\n"
        "  - id: e\n    batch: {uses: builtins.abs, itemsFrom: ok.jsonl, inputKey: xs}\n"
        "  - id: f\n    batch: {uses: builtins.abs, itemsFrom: dir.jsonl}\n"
    )
    (tmp_path / "v.yaml").write_text(text)
    found = flowrun.api.validate_file(tmp_path / "v.yaml")
    got = [(p.line, p.code) for p in found]
    assert got == [
        (5, "items-from"),
        (7, "items-from"),
        (9, "output-to"),
        (11, "output-to"),
        (13, "schema.batch-items"),
        (15, "items-from"),
    ]
    assert "no such file" in found[0].message and "unsupported extension" in found[1].message
    assert "does not exist" in found[2].message and "must be a .jsonl" in found[3].message


def test_a_batch_whose_last_items_are_unreadable_still_finishes(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("{\n[\n")
    path = blueprint(
        tmp_path, "{uses: builtins.abs, itemsFrom: in.jsonl, outputTo: out.jsonl, maxFailures: 2}"
    )
    report = run(path, concurrency=1)
    assert report.status == "completed" and report.context["B"]["failed"] == 2
    assert lines(tmp_path / "out.jsonl") == [None, None]


# -- `${{ }}` as the path -------------------------------------------------------------------


def test_items_from_and_output_to_as_expressions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.jsonl").write_text("1\n-2\n3\n")
    (tmp_path / "words.txt").write_text("ab\nabc\n")
    monkeypatch.setenv("FLOWRUN_TEST_LIST", "words.txt")
    text = (
        "id: e\ncontext: {input_file: data/in.jsonl, out: null}\nnodes:\n"
        "  - id: name\n    uses: builtins.str\n    params: {object: results}\n"
        "  - id: B\n    batch: {uses: builtins.abs, itemsFrom: '${{ context.input_file }}',"
        " outputTo: 'data/${{ name }}-${{ input }}.jsonl'}\n"
        "  - id: W\n    batch: {uses: builtins.len, itemsFrom: '${{ env.FLOWRUN_TEST_LIST }}'}\n"
        "edges:\n  - {source: name, target: B}\n"
    )
    (tmp_path / "e.yaml").write_text(text)
    assert flowrun.api.validate_file(tmp_path / "e.yaml") == []
    report = run(tmp_path / "e.yaml")
    assert report.status == "completed", report.errors
    out = tmp_path / "data" / "results-results.jsonl"  # node ids and the input, rendered
    assert report.context["B"] == {"path": str(out), "count": 3, "failed": 0}
    assert lines(out) == [1, 2, 3]
    assert report.context["W"] == [2, 3]
    again = run(tmp_path / "e.yaml", sets=["input_file=words.txt"])
    assert again.status == "failed"  # `abs` of a string: the path came from --set
    assert again.errors[0]["node"] == "B[0]"


def test_a_missing_file_from_an_expression_fails_the_batch_naming_it(tmp_path: Path) -> None:
    text = (
        "id: m\ncontext: {input_file: nowhere.jsonl}\nnodes:\n"
        "  - id: B\n    batch: {uses: builtins.abs, itemsFrom: '${{ context.input_file }}'}\n"
    )
    (tmp_path / "m.yaml").write_text(text)
    assert flowrun.api.validate_file(tmp_path / "m.yaml") == []  # known only at run time
    report = run(tmp_path / "m.yaml")
    assert report.status == "failed"
    (error,) = report.errors
    assert error["node"] == "B" and str(tmp_path / "nowhere.jsonl") in error["message"]
    text = text.replace("nowhere.jsonl", "[1, 2]")
    (tmp_path / "m.yaml").write_text(text)
    report = run(tmp_path / "m.yaml")
    assert report.status == "failed" and "expected a path" in report.errors[0]["message"]


def test_a_bad_expression_in_a_path_is_located(tmp_path: Path) -> None:
    text = (
        "id: x\nnodes:\n"
        "  - id: B\n    batch:\n      uses: builtins.abs\n"
        "      itemsFrom: 'in-${{ nosuch }}.jsonl'\n"
        "      outputTo: '${{ context. }}'\n"
    )
    (tmp_path / "x.yaml").write_text(text)
    found = flowrun.api.validate_file(tmp_path / "x.yaml")
    got = [(p.line, p.column, p.code) for p in found]
    assert got == [(6, 26, "expr-interpolation"), (7, 30, "expr-interpolation")], found
    assert "nosuch" in found[0].message


def test_resume_reads_only_the_indices_of_a_file_batch(tmp_path: Path) -> None:
    from flowrun.store.db import DB_NAME, connect
    from flowrun.store.read import LeanItems, load_run, read_meta, resolve_run_dir

    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(60)))
    (tmp_path / "fail-17").touch()
    log = tmp_path / "calls.log"
    path = blueprint(
        tmp_path,
        f"{{uses: streamnodes.record, itemsFrom: in.jsonl, outputTo: out.jsonl,"
        f" maxFailures: 0, params: {{log: '{log}'}}}}",
    )
    first = run(path, concurrency=4)
    assert first.status == "failed"
    db = resolve_run_dir(tmp_path / ".flowrun", first.run_id) / DB_NAME
    conn = connect(db, mode="ro")
    meta = read_meta(conn, db)
    conn.close()
    stored = load_run(db, meta, lean=["B"])
    done = stored.lean["B"]
    assert isinstance(done, LeanItems)
    assert set(stored.items["B"]) == {17}  # the failed item's record; no success there
    ran = {int(x) for x in log.read_text().split()} - {17}
    assert set(done) == ran and len(done) == len(ran) and 17 not in done
    assert done._outputs == {}  # nothing decoded yet
    later = max(ran)
    assert done[later] == {"x": later}
    assert min(done._outputs) >= later  # only what lies at or past the index asked for
    before = log.read_text().split()
    (tmp_path / "fail-17").unlink()
    again = run(path, concurrency=4, resume=first.run_id)
    assert again.status == "completed"
    assert lines(tmp_path / "out.jsonl") == [{"x": i} for i in range(60)]
    assert not set(log.read_text().split()[len(before) :]) & {str(i) for i in ran}


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_bad_lines_fail_alone_naming_file_and_line_and_are_never_retried(
    tmp_path: Path, executor: str
) -> None:
    """On the thread executor a chunk's lines are parsed by the worker, elsewhere by the run:
    either way an unreadable line fails its item (ItemError, file:line), with no attempt and
    no retry, and every other item of its chunk runs once."""
    good = [json.dumps(i) for i in range(40)]
    text = [*good[:5], "{oops", *good[5:30], "[1,", *good[30:]]
    (tmp_path / "in.jsonl").write_text("\n".join(text) + "\n")
    log = tmp_path / "calls.log"
    path = blueprint(
        tmp_path,
        "{uses: streamnodes.record, itemsFrom: in.jsonl, outputTo: out.jsonl, maxFailures: 5,"
        f" params: {{log: '{log}'}}}}\n    config: {{maxRetries: 2}}",
    )
    report = run(path, concurrency=4, executor=executor)
    assert report.status == "completed" and report.context["B"]["failed"] == 2
    errors = {e["node"]: e for e in report.errors}
    assert set(errors) == {"B[5]", "B[31]"}
    assert errors["B[5]"]["type"] == "ItemError"
    assert errors["B[5]"]["message"].startswith(f"{tmp_path / 'in.jsonl'}:6: not a JSON value")
    assert errors["B[31]"]["message"].startswith(f"{tmp_path / 'in.jsonl'}:32: not a JSON value")
    out = lines(tmp_path / "out.jsonl")
    assert out[5] is None and out[31] is None
    assert [o["x"] for o in out if o is not None] == list(range(40))
    assert sorted(int(x) for x in log.read_text().split()) == list(range(40))  # each once


def test_writer_takes_a_run_of_lines_in_and_out_of_order(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = OrderedWriter.create(path)
    w.put_many(3, ["3", "4"])  # ahead of the file: held
    w.put(5, "5")
    w.put_many(0, ["0", "1", "2"])  # the next lines: written, and what was held after them
    assert w.next == 6 and w.ahead == 0
    w.put_many(6, ["6"])
    w.close()
    assert lines(path) == [0, 1, 2, 3, 4, 5, 6]
