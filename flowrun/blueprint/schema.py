"""The blueprint JSON Schema, and `check`: a loaded `Document` becomes a frozen `Blueprint`.

The only module that uses jsonschema. Every violation becomes a `Problem` at the file:line:column
of the offending key (unknown keys) or value (wrong values), with a stable `schema.*` code and a
message saying what was expected, what was found and how to fix it; all are reported at once.
The messages are written by `blueprint.messages`; this module keeps the schema, the validator, the
builder of the frozen model and `salvage`. Whether there is anything to report at all is asked
of the same validator through `blueprint.verdict`, once per node shape and distinct value; only
a document it finds invalid goes through `iter_errors` whole.
Cross-references, duplicate ids, cycles, expressions and imports are `expand`'s job, not this.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from flowrun.blueprint import schemacache
from flowrun.blueprint.messages import DURATION_HELP, MAX_SECONDS, path_label, translate, value_text
from flowrun.blueprint.verdict import Verdict
from flowrun.errors import BlueprintError, PathT, Problem
from flowrun.model import (
    BatchSpec,
    Blueprint,
    Config,
    EdgeSpec,
    LoopSpec,
    NodeSpec,
    PoolSpec,
    SubflowSpec,
)

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    from flowrun.blueprint.loader import Document

#: patterns compiled on first use (by `re`): a blueprint without durations or rates never
#: needs them
_DURATION = r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = r"([0-9]+(?:\.[0-9]+)?)/(s|m|h)"
MAX_RATE = 1_000_000_000  # pool starts per second
SHELL_USES = "flowrun.std.shell"  # what `shell:` on a node or a batch stands for


@functools.cache
def schema_text() -> str:
    """The blueprint JSON Schema (Draft 2020-12), as shipped: what `flowrun schema` prints."""
    try:  # the file beside this module: importlib.resources costs more than the read itself
        return Path(__file__).with_name("schema.json").read_text(encoding="utf-8")
    except OSError:  # installed where modules are not files (a zip)
        from importlib import resources

        return resources.files("flowrun.blueprint").joinpath("schema.json").read_text("utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    """The blueprint JSON Schema as a dict, loaded once. Treat it as read-only."""
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


def parse_duration(value: int | float | str) -> float:
    """Seconds in a duration: a number is milliseconds; a string has a unit (ms, s, m, h)."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000
        elif isinstance(value, str) and (match := re.fullmatch(_DURATION, value)):
            seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
        else:
            raise ValueError
    except (ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: expected {DURATION_HELP}")
    if seconds > MAX_SECONDS:  # the schema bounds numbers; a string's unit is read here
        raise ValueError(f"duration {value!r} is too long: at most {MAX_SECONDS:,} s")
    return seconds


def parse_rate(text: str) -> float:
    """Starts per second in a pool rate (`10/s`, `600/m`, `1000/h`)."""
    match = re.fullmatch(_RATE, text)
    rate = float(match[1]) / _UNIT_SECONDS[match[2]] if match else math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"invalid rate {text!r}: expected N/s, N/m or N/h with N above zero")
    if not 1 / MAX_SECONDS <= rate <= MAX_RATE:
        raise ValueError(
            f"rate {text!r} is out of range: from one start per {MAX_SECONDS:,} s "
            f"to {MAX_RATE:,} per second"
        )
    return rate


def check(doc: Document) -> Blueprint:
    """Validate `doc.data` against the schema and build the `Blueprint`, or raise every problem.

    Data that passed this schema cleanly before (`schemacache`) is not validated again."""
    # With the cache turned off nothing reads or stores the key: do not hash the data.
    cached = schemacache.cache_file() is not None
    digest = schemacache.key(schema_text(), doc.data) if cached else ""
    if cached and schemacache.passed(digest):
        problems = []
    else:
        problems = _schema_problems(doc)
        if cached and not problems:
            schemacache.remember(digest)
    if not problems:
        builder = _Builder(doc)
        blueprint = builder.blueprint()
        problems = builder.problems
    if problems:
        raise BlueprintError(sorted(problems, key=lambda p: (p.line, p.column, p.path)))
    return blueprint


# -- schema violations -> problems --------------------------------------------------------------


@functools.cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_inline_refs(schema(), schema()["$defs"]))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    # Resolving "$ref" costs jsonschema a third of its time on a large blueprint; the shipped
    # file keeps its $defs for readers and editors, the validator gets them written out.
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    ref = out.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        # Siblings of these refs are annotations or `not`, never a clashing keyword.
        return {**_inline_refs(defs[ref.removeprefix("#/$defs/")], defs), **out}
    return out


@functools.cache
def _homes() -> dict[str, str]:
    """Each key of `config` and `batch` -> that section ('config' for a key of both)."""
    homes: dict[str, str] = {}
    for home in ("config", "batch"):
        for key in schema()["$defs"][home]["properties"]:
            homes.setdefault(key, home)
    return homes


def _schema_problems(doc: Document) -> list[Problem]:
    validator = _validator()
    if Verdict(validator).valid(validator.schema, doc.data):
        return []
    best: dict[str, tuple[int, Problem]] = {}
    for error in _validator().iter_errors(doc.data):
        for rank, problem in translate(doc, error, _homes()):
            # One problem per location: a wrong type also breaks the pattern, the if/then
            # rules and `not` on the same value; the most basic complaint is the useful one.
            if problem.path not in best or rank < best[problem.path][0]:
                best[problem.path] = (rank, problem)
    return [problem for _, problem in best.values()]


# -- building the model -------------------------------------------------------------------------


def default_id(doc: Document) -> str:
    """A blueprint without `id` takes its file name (flowcraft's example files have none), with
    characters an id cannot hold replaced by '-'."""
    stem = PurePath(doc.name).stem
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem).strip("-") or "blueprint"


class _Builder:
    """Builds the frozen model from schema-valid data, collecting any value that cannot convert."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def blueprint(self) -> Blueprint:
        data = self.doc.data
        return Blueprint(
            id=data.get("id") or default_id(self.doc),
            nodes=tuple(self._node(index, raw) for index, raw in enumerate(data["nodes"])),
            edges=tuple(_edge(index, raw) for index, raw in enumerate(data.get("edges", []))),
            description=data.get("description"),
            context=data.get("context", {}),
            document=self.doc,
            pools={k: self._pool(k, v) for k, v in data.get("pools", {}).items()},
        )

    def _pool(self, name: str, raw: dict[str, Any]) -> PoolSpec:
        path: PathT = ("pools", name)
        rate_text = raw.get("rate")
        rate = None
        if rate_text is not None:
            try:
                rate = parse_rate(rate_text)
            except ValueError as exc:
                message = f"{path_label(self.doc.data, (*path, 'rate'))}: {exc}"
                self.problems.append(self.doc.problem((*path, "rate"), "schema.rate", message))
        conc = raw.get("concurrency")
        return PoolSpec(name, None if conc is None else int(conc), rate, rate_text,
                        int(raw.get("burst", 1)), path)  # fmt: skip

    def _node(self, index: int, raw: dict[str, Any]) -> NodeSpec:
        path = ("nodes", index)
        batch = raw.get("batch")
        uses, params = self._shell(path, raw)
        return NodeSpec(
            id=raw["id"],
            uses=uses,
            params=params,
            inputs=raw.get("inputs"),
            config=self._config((*path, "config"), raw.get("config", {})),
            batch=None if batch is None else self._batch(path, raw["id"], batch),
            path=path,
            loop=None if raw.get("loop") is None else self._loop(path, raw["loop"]),
            subflow=None if raw.get("subflow") is None else _subflow(raw["subflow"]),
        )

    def _loop(self, path: PathT, raw: dict[str, Any]) -> LoopSpec:
        sub = raw.get("subflow")
        return LoopSpec(
            uses=raw.get("uses", ""),
            while_=raw["while"],
            max_iterations=int(raw["maxIterations"]),
            params=raw.get("params", {}),
            delay=self._seconds((*path, "loop", "delay"), raw.get("delay", 0)),
            subflow=None if sub is None else _subflow(sub),
        )

    def _shell(self, path: PathT, raw: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """`uses` and `params`, with the `shell:` shorthand written out."""
        params: dict[str, Any] = raw.get("params", {})
        if "shell" not in raw:
            return raw.get("uses"), params
        if "command" in params:
            message = (
                f"{path_label(self.doc.data, path)}: has both 'shell' and 'params.command'; "
                "'shell' is the command, so remove one of them"
            )
            where = (*path, "params", "command")
            self.problems.append(self.doc.problem(where, "schema.shell-command", message, key=True))
        return SHELL_USES, {"command": raw["shell"], **params}

    def _batch(self, path: PathT, node_id: str, raw: dict[str, Any]) -> BatchSpec:
        concurrency = raw.get("concurrency")
        uses, params = self._shell((*path, "batch"), raw)
        sub = raw.get("subflow")
        assert uses is not None or sub is not None  # the schema requires uses, shell or subflow
        return BatchSpec(
            uses=uses or "",
            input_key=raw.get("inputKey"),
            output_key=raw.get("outputKey", node_id),
            params=params,
            concurrency=None if concurrency is None else int(concurrency),
            max_failures=int(raw.get("maxFailures", 0)),
            subflow=None if sub is None else _subflow(sub),
            items_from=raw.get("itemsFrom"),
            output_to=raw.get("outputTo"),
            pool=raw.get("pool"),
        )

    def _config(self, path: PathT, raw: dict[str, Any]) -> Config:
        if not raw:  # no `config:` (most nodes): the defaults, one frozen Config for all
            return _default_config()
        return self._built_config(path, raw)

    def _built_config(self, path: PathT, raw: dict[str, Any]) -> Config:
        timeout = raw.get("timeout")
        return Config(
            max_retries=int(raw.get("maxRetries", 0)),
            retry_delay=self._seconds((*path, "retryDelay"), raw.get("retryDelay", 0)),
            backoff=self._finite((*path, "backoff"), raw.get("backoff", 2)),
            timeout=None if timeout is None else self._seconds((*path, "timeout"), timeout),
            fallback=raw.get("fallback"),
            join=raw.get("joinStrategy", "all"),
            run_if=raw.get("runIf", "success"),
            retry_on=None if "retryOn" not in raw else tuple(raw["retryOn"]),
            pool=raw.get("pool"),
        )

    def _seconds(self, path: PathT, value: Any) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            message = f"{path_label(self.doc.data, path)}: {exc}"
            self.problems.append(self.doc.problem(path, "schema.duration", message))
            return 0.0

    def _finite(self, path: PathT, value: Any) -> float:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            label = path_label(self.doc.data, path)
            message = f"{label}: expected a finite number, found {value_text(value)}"
            self.problems.append(self.doc.problem(path, "schema.number", message))
        return number


@functools.cache
def _default_config() -> Config:
    """The `Config` of a node without `config:`, built as any other (it cannot fail)."""
    builder = _Builder.__new__(_Builder)  # no document: a default value is never a problem
    builder.problems = []
    config = builder._built_config((), {})
    assert not builder.problems
    return config


def _subflow(raw: dict[str, Any]) -> SubflowSpec:
    return SubflowSpec(raw["blueprint"], raw.get("inputs", {}), raw.get("outputs"))


def _edge(index: int, raw: dict[str, Any]) -> EdgeSpec:
    return EdgeSpec(
        source=raw["source"],
        target=raw["target"],
        action=raw.get("action"),
        condition=raw.get("condition"),
        transform=raw.get("transform"),
        path=("edges", index),
    )


# -- salvage: keep checking past schema errors ----------------------------------------------------


def salvage(doc: Document) -> Blueprint | None:
    """A best-effort `Blueprint` from data that failed the schema, so `validate` can still report
    reference, cycle, expression and import problems in the same pass. Fields of the wrong type
    are dropped (their schema problem is already reported); None if there is nothing to salvage."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        return None
    nodes = [n for i, raw in enumerate(data["nodes"]) if (n := _salvage_node(i, raw)) is not None]
    raw_edges = data["edges"] if isinstance(data.get("edges"), list) else []
    edges = [e for i, raw in enumerate(raw_edges) if (e := _salvage_edge(i, raw)) is not None]
    context = data.get("context")
    pools = data.get("pools") if isinstance(data.get("pools"), dict) else {}
    assert isinstance(pools, dict)
    return Blueprint(
        id=str(data.get("id") or default_id(doc)),
        nodes=tuple(nodes),
        edges=tuple(edges),
        context=context if isinstance(context, dict) else {},
        document=doc,
        pools={str(k): PoolSpec(str(k), path=("pools", str(k))) for k in pools},
    )


def _str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _salvage_node(index: int, raw: Any) -> NodeSpec | None:
    if not isinstance(raw, dict) or _str(raw, "id") is None:
        return None
    node_id: str = raw["id"]
    inputs = raw.get("inputs")
    if isinstance(inputs, dict) and not all(isinstance(v, str) for v in inputs.values()):
        inputs = None
    batch = raw.get("batch")
    spec = None
    if isinstance(batch, dict) and (_str(batch, "inputKey") or _str(batch, "itemsFrom")):
        uses = _str(batch, "uses") or (SHELL_USES if "shell" in batch else None)
        out = _str(batch, "outputKey") or node_id
        spec = (
            BatchSpec(
                uses, _str(batch, "inputKey"), out, _salvage_params(batch),
                items_from=_str(batch, "itemsFrom"), output_to=_str(batch, "outputTo"),
                pool=_str(batch, "pool"),
            )
            if uses
            else None
        )  # fmt: skip
    config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    assert isinstance(config, dict)
    fallback = _str(config, "fallback")
    join = config.get("joinStrategy") if config.get("joinStrategy") in ("all", "any") else "all"
    return NodeSpec(
        id=node_id,
        params=_salvage_params(raw),
        uses=(_str(raw, "uses") or (SHELL_USES if "shell" in raw else None))
        if spec is None
        else None,
        inputs=inputs if isinstance(inputs, str | dict) else None,
        config=Config(fallback=fallback, join=str(join), pool=_str(config, "pool")),
        batch=spec,
        path=("nodes", index),
    )


def _salvage_params(raw: dict[str, Any]) -> dict[str, Any]:
    params = raw.get("params") if isinstance(raw.get("params"), dict) else {}
    assert isinstance(params, dict)
    return {"command": raw["shell"], **params} if "shell" in raw else params


def _salvage_edge(index: int, raw: Any) -> EdgeSpec | None:
    if not isinstance(raw, dict) or _str(raw, "source") is None or _str(raw, "target") is None:
        return None
    return EdgeSpec(
        source=raw["source"],
        target=raw["target"],
        action=_str(raw, "action"),
        condition=_str(raw, "condition"),
        transform=_str(raw, "transform"),
        path=("edges", index),
    )
