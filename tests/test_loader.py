"""flowrun.blueprint.loader: YAML/JSON -> Document with positions; failures are BlueprintErrors."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowrun.blueprint.loader import Document, load, load_text
from flowrun.errors import BlueprintError, Problem

YAML = """\
id: demo
nodes:
  - id: a
    uses: m.f
    params:
      n: 3
"""

JSON = """\
{
  "id": "demo",
  "nodes": [
    {"id": "a", "uses": "m.f",
     "params": {"n": 3}}
  ]
}
"""


def problems(text: str, fmt: str = "yaml", name: str = "bp.yaml") -> list[Problem]:
    with pytest.raises(BlueprintError) as info:
        load_text(text, name, fmt)  # type: ignore[arg-type]
    return list(info.value.problems)


def only(text: str, fmt: str = "yaml", name: str = "bp.yaml") -> Problem:
    found = problems(text, fmt, name)
    assert len(found) == 1, found
    return found[0]


# -- positions ---------------------------------------------------------------------------------


def test_yaml_positions_of_values_and_keys() -> None:
    doc = load_text(YAML, "bp.yaml", "yaml")
    assert doc.data == {"id": "demo", "nodes": [{"id": "a", "uses": "m.f", "params": {"n": 3}}]}
    assert doc.where(()) == (1, 1)
    assert doc.where(("id",)) == (1, 5)
    assert doc.where_key(("id",)) == (1, 1)
    assert doc.where(("nodes",)) == (3, 3)
    assert doc.where(("nodes", 0)) == (3, 5)
    assert doc.where(("nodes", 0, "uses")) == (4, 11)
    assert doc.where_key(("nodes", 0, "uses")) == (4, 5)
    assert doc.where(("nodes", 0, "params", "n")) == (6, 10)
    assert doc.where_key(("nodes", 0, "params", "n")) == (6, 7)


def test_missing_paths_fall_back_to_the_nearest_ancestor() -> None:
    doc = load_text(YAML, "bp.yaml", "yaml")
    assert doc.where(("nodes", 0, "config", "timeout")) == (3, 5)
    assert doc.where(("nodes", 7, "id")) == (3, 3)
    assert doc.where(("nodes", "zero")) == (3, 3)
    assert doc.where_key(("nodes", 0, "config")) == (3, 5)  # no key to point at: the node
    assert doc.where_key(()) == (1, 1)


def test_json_positions_match_the_text() -> None:
    doc = load_text(JSON, "bp.json", "json")
    assert doc.data == {"id": "demo", "nodes": [{"id": "a", "uses": "m.f", "params": {"n": 3}}]}
    assert doc.where(("id",)) == (2, 9)
    assert doc.where_key(("id",)) == (2, 3)
    assert doc.where(("nodes", 0)) == (4, 5)
    assert doc.where(("nodes", 0, "uses")) == (4, 25)
    assert doc.where(("nodes", 0, "params", "n")) == (5, 22)
    assert doc.where_key(("nodes", 0, "params")) == (5, 6)


def test_json_positions_survive_tab_indentation() -> None:
    doc = load_text('{\n\t"id": "x",\n\t"nodes": []\n}', "bp.json", "json")
    assert doc.where_key(("nodes",)) == (3, 2)
    assert doc.where(("nodes",)) == (3, 11)


def test_json_that_yaml_cannot_compose_falls_back_to_the_start() -> None:
    # YAML limits implicit keys to 1024 characters; JSON does not.
    doc = load_text('{"' + "k" * 2000 + '": 1,\n "b": 2}', "x.json", "json")
    assert doc.data["b"] == 2
    assert doc.where(("b",)) == (1, 1)


def test_problem_is_located_at_the_value_or_the_key() -> None:
    doc = load_text(YAML, "bp.yaml", "yaml")
    at_value = doc.problem(("nodes", 0, "uses"), "x.code", "bad uses")
    assert at_value == Problem("bp.yaml", 4, 11, "$.nodes[0].uses", "x.code", "bad uses")
    at_key = doc.problem(("nodes", 0, "uses"), "x.code", "bad", key=True, severity="warning")
    assert (at_key.line, at_key.column, at_key.severity) == (4, 5, "warning")


def test_a_document_built_by_hand_takes_positions_from_its_text() -> None:
    doc = Document("hand.yaml", Path("hand.yaml"), "a:\n  b: 1\n", "yaml", {"a": {"b": 1}})
    assert doc.where(("a", "b")) == (2, 6)
    empty = Document("x", Path("x"), "", "json", {})
    assert empty.where(("a",)) == (1, 1)


# -- scalars -----------------------------------------------------------------------------------


def test_only_true_and_false_are_booleans() -> None:
    words = ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF"]
    text = "".join(f"k{i}: {word}\n" for i, word in enumerate(words))
    doc = load_text(
        text + "t1: true\nt2: True\nt3: TRUE\nf1: false\nf2: False\nf3: FALSE\n", "x", "yaml"
    )
    assert [doc.data[f"k{i}"] for i in range(len(words))] == words
    assert [doc.data[k] for k in ("t1", "t2", "t3", "f1", "f2", "f3")] == [True] * 3 + [False] * 3


def test_dates_times_and_odd_numbers_stay_as_yaml_1_2_reads_them() -> None:
    text = "d: 2024-01-01\nts: 2024-01-01T10:00:00Z\nt: 12:30\nu: 1_000\ne: =\n"
    text += "i: 010\nh: 0x1f\no: 0o17\nf: 1e3\ng: .5\nz: ~\nq: '3'\n"
    assert load_text(text, "x", "yaml").data == {
        "d": "2024-01-01",
        "ts": "2024-01-01T10:00:00Z",
        "t": "12:30",
        "u": "1_000",
        "e": "=",
        "i": 10,
        "h": 31,
        "o": 15,
        "f": 1000.0,
        "g": 0.5,
        "z": None,
        "q": "3",
    }


def test_scalar_tags_are_the_ones_pyyaml_s_general_resolver_picks() -> None:
    from yaml.resolver import BaseResolver

    from flowrun.blueprint.yamlwalk import CoreLoader

    loader = CoreLoader("")
    general: Any = BaseResolver.resolve  # PyYAML's, as every other loader runs it
    ours: Any = loader.resolve
    words = ["", "~", "null", "Null", "NULL", "nULL", "n", "yes", "true", "tRUE", "false"]
    words += ["1", "-1", "+7", "0o17", "0o8", "0x1F", "0b1", "010", "1.5", ".5", "5.", "1e5"]
    words += ["-.inf", ".Inf", ".nan", ".NaN", "<<", "<", "=", "12:30", "2024-01-01", "x", "é"]
    for word in words:
        for implicit in itertools.product([True, False], repeat=2):
            want = general(loader, yaml.ScalarNode, word, implicit)
            assert ours(yaml.ScalarNode, word, implicit) == want, (word, implicit)
    for kind in (yaml.SequenceNode, yaml.MappingNode):
        assert ours(kind, None, (False, False)) == general(loader, kind, None, (False, False))
    loader.dispose()


def test_explicit_core_tags_are_honoured_and_others_refused() -> None:
    doc = load_text("a: !!str 12\nb: !!int '7'\nc: !!float 1\nd: !!bool true\n", "x", "yaml")
    assert doc.data == {"a": "12", "b": 7, "c": 1.0, "d": True}
    found = problems("a: !!binary aGk=\nb: !!timestamp 2020-01-01\nc: !shout x\nd: !!set {x}\n")
    assert [(p.line, p.column, p.code, p.path) for p in found] == [
        (1, 4, "yaml-tag", "$.a"),
        (2, 4, "yaml-tag", "$.b"),
        (3, 4, "yaml-tag", "$.c"),
        (4, 4, "yaml-tag", "$.d"),
    ]
    assert found[2].message == "unsupported tag '!shout' on 'x': write a plain value"
    assert only("a: !!int many\n").message == "cannot read 'many' as a number"


@pytest.mark.parametrize("word", [".inf", "-.inf", ".nan", ".NaN", "1e999"])
def test_yaml_non_finite_numbers_are_refused(word: str) -> None:
    problem = only(f"x: 1\ny: {word}\n")
    assert (problem.line, problem.column, problem.code, problem.path) == (
        2,
        4,
        "non-finite-number",
        "$.y",
    )
    assert problem.message == (
        f"{word} is not a finite number; blueprint data must be valid JSON, "
        "which has no infinity or NaN (quote it to keep it as text)"
    )


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_refused(token: str) -> None:
    problem = only(f'{{"a": 1,\n "b": [1, {token}]}}', "json", "bp.json")
    assert (problem.line, problem.column, problem.path) == (2, 11, "$.b[1]")
    assert problem.code == "non-finite-number"
    assert problem.message == f"{token} is not valid JSON: JSON numbers are finite"


def test_json_overflowing_numbers_are_refused() -> None:
    problem = only('{"a": 1e400}', "json")
    assert (problem.line, problem.column, problem.code) == (1, 7, "non-finite-number")
    problem = only('{"a": ' + "9" * 5000 + "}", "json")
    assert (problem.line, problem.column, problem.code) == (1, 7, "bad-number")


# -- keys --------------------------------------------------------------------------------------


def test_yaml_duplicate_keys_are_all_reported() -> None:
    text = "id: x\nnodes:\n  - id: a\n    uses: m.f\n    uses: m.g\nid: y\n"
    found = problems(text)
    assert [(p.line, p.column, p.code, p.path, p.message) for p in found] == [
        (
            5,
            5,
            "duplicate-key",
            "$.nodes[0].uses",
            "duplicate key 'uses' (first defined at line 4)",
        ),
        (6, 1, "duplicate-key", "$.id", "duplicate key 'id' (first defined at line 1)"),
    ]


def test_json_duplicate_keys_are_located() -> None:
    found = problems('{"id": "x",\n "nodes": [{"id": "a",\n            "id": "b"}]}', "json")
    assert [(p.line, p.column, p.code, p.path, p.message) for p in found] == [
        (3, 13, "duplicate-key", "$.nodes[0].id", "duplicate key 'id' (first defined at line 2)")
    ]


def test_keys_must_be_strings() -> None:
    found = problems("1: a\nnull: b\ntrue: c\n[x]: d\n'2': fine\n")
    assert [(p.line, p.column, p.code) for p in found] == [
        (1, 1, "non-string-key"),
        (2, 1, "non-string-key"),
        (3, 1, "non-string-key"),
        (4, 1, "non-string-key"),
    ]
    assert found[0].message == "mapping keys must be strings, found an integer '1'; quote it: '1'"
    assert found[3].message == "mapping keys must be strings, found a list"


# -- anchors, aliases, merge keys --------------------------------------------------------------


def test_aliases_and_merge_keys_build_independent_copies() -> None:
    text = "base: &b {maxRetries: 2, timeout: 1s}\nc1:\n  <<: *b\n  timeout: 5s\nc2: *b\n"
    doc = load_text(text, "x", "yaml")
    assert doc.data["c1"] == {"maxRetries": 2, "timeout": "5s"}
    assert doc.data["c2"] == {"maxRetries": 2, "timeout": "1s"}
    assert doc.data["c2"] is not doc.data["base"]
    assert doc.where(("c1", "timeout")) == (4, 12)
    assert doc.where(("c1", "maxRetries")) == (1, 23)  # merged in: points at the anchor's text


def test_recursive_aliases_are_refused() -> None:
    problem = only("a: &x [1, *x]\n")
    assert (problem.code, problem.path, problem.line) == ("recursive-alias", "$.a[1]", 1)


def test_merge_of_a_non_mapping_is_refused() -> None:
    problem = only("a:\n  <<: 3\n")
    assert (problem.code, problem.line, problem.column) == ("yaml-merge", 2, 7)
    assert problem.message == "'<<' merges mappings only, found an integer"


def test_alias_bombs_stop_early() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    names = "abcdefghij"
    for prev, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    problem = only("\n".join(lines) + "\n")
    assert problem.code == "too-many-aliases"
    assert problem.message == "aliases expand to more than 1,000,000 values; write the data out"


# -- syntax ------------------------------------------------------------------------------------


def test_yaml_syntax_errors_carry_the_parser_position() -> None:
    problem = only("id: x\nnodes:\n  - id: a\n    uses: b: c\n")
    assert (problem.line, problem.column, problem.code, problem.path) == (4, 12, "yaml-syntax", "$")
    assert problem.message.startswith("invalid YAML: mapping values are not allowed")


def test_yaml_tab_indentation_gets_a_hint() -> None:
    problem = only("a:\n\tb: 1\n")
    assert (problem.line, problem.column, problem.code) == (2, 1, "yaml-syntax")
    assert problem.message.endswith("; indent with spaces, not tabs")


def test_several_yaml_documents_are_a_syntax_error() -> None:
    problem = only("a: 1\n---\nb: 2\n")
    assert (problem.line, problem.column, problem.code) == (2, 1, "yaml-syntax")
    assert problem.message == (
        "invalid YAML: expected a single document in the stream, but found another document"
    )


def test_undefined_alias_is_a_syntax_error() -> None:
    problem = only("a: *nothing\n")
    assert (problem.line, problem.column, problem.code) == (1, 4, "yaml-syntax")


def test_json_syntax_errors_carry_the_parser_position() -> None:
    problem = only('{"id": "x",\n "nodes": [1, 2,]\n}', "json", "bp.json")
    assert (problem.file, problem.line, problem.column, problem.code) == (
        "bp.json",
        2,
        17,
        "json-syntax",
    )
    assert problem.message == "invalid JSON: Expecting value"


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    assert only("[" * 5000 + "]" * 5000, "json").code == "too-deep"
    assert only("a: " + "[" * 5000 + "]" * 5000 + "\n").code in ("yaml-syntax", "too-deep")


# -- what the top level holds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("", "yaml", "'bp.yaml' is empty: expected a mapping (key: value pairs)"),
        (
            "# only a comment\n\n",
            "yaml",
            "'bp.yaml' is empty: expected a mapping (key: value pairs)",
        ),
        (" \n\t\n", "json", "'bp.yaml' is empty: expected a JSON object"),
    ],
)
def test_empty_files(text: str, fmt: str, message: str) -> None:
    problem = only(text, fmt)
    assert (problem.line, problem.column, problem.code, problem.message) == (
        1,
        1,
        "empty-file",
        message,
    )


@pytest.mark.parametrize(
    ("text", "fmt", "found"),
    [
        ("- id: a\n- id: b\n", "yaml", "a list"),
        ("just words\n", "yaml", "a string"),
        ("~\n", "yaml", "null"),
        ("42", "json", "an integer"),
        ('[{"id": "a"}]', "json", "a list"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, fmt: str, found: str) -> None:
    problem = only(text, fmt)
    assert (problem.code, problem.path) == ("not-a-mapping", "$")
    assert problem.message == f"the top level must be a mapping (key: value pairs), found {found}"


def test_control_characters_are_not_text() -> None:
    problem = only("a: 1\nb: é\x07\n")
    assert (problem.line, problem.column, problem.code) == (2, 5, "not-text")
    assert (
        problem.message
        == "'bp.yaml' contains the control character U+0007, which YAML does not allow"
    )


def test_lone_surrogates_are_not_text() -> None:
    assert only("a: \ud800\n").code == "not-text"


# -- files -------------------------------------------------------------------------------------


def file_problem(path: str | os.PathLike[str]) -> Problem:
    with pytest.raises(BlueprintError) as info:
        load(path)
    assert len(info.value.problems) == 1
    return info.value.problems[0]


def test_load_reads_yaml_and_json_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bp.yml").write_text(YAML)
    Path("bp.JSON").write_text(JSON)
    doc = load("bp.yml")
    assert (doc.name, doc.path, doc.format, doc.text) == (
        "bp.yml",
        tmp_path / "bp.yml",
        "yaml",
        YAML,
    )
    assert doc.where(("nodes", 0, "uses")) == (4, 11)
    other = load(Path("bp.JSON"))
    assert (other.name, other.format, other.data) == ("bp.JSON", "json", doc.data)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + JSON.encode())
    assert load(path).data["id"] == "demo"


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "bp.toml"
    path.write_text("id = 'x'\n")
    problem = file_problem(path)
    assert (problem.code, problem.line, problem.column) == ("unknown-format", 1, 1)
    assert (
        problem.message
        == f"cannot read '{path}': .toml is not a known format; use .yaml, .yml or .json"
    )
    extensionless = tmp_path / "Blueprint"
    extensionless.write_text("id: x\n")
    assert "no extension is not" in file_problem(extensionless).message
    # A path that does not exist says so, whatever its extension.
    assert file_problem(tmp_path / "Missing").code == "file-not-found"


def test_missing_file() -> None:
    problem = file_problem("no/such/bp.yaml")
    assert (problem.file, problem.code, problem.message) == (
        "no/such/bp.yaml",
        "file-not-found",
        "file not found: 'no/such/bp.yaml'",
    )


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    problem = file_problem(folder)
    assert problem.code == "file-unreadable"
    assert problem.message == f"cannot read '{folder}': it is a directory, not a file"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PermissionError(13, "Permission denied"), "permission denied"),
        (OSError(40, "Too many levels of symbolic links"), "Too many levels of symbolic links"),
    ],
)
def test_os_errors_become_file_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, reason: str
) -> None:
    def refuse(self: Path) -> bytes:
        raise error

    monkeypatch.setattr(Path, "read_bytes", refuse)
    path = tmp_path / "bp.yaml"
    problem = file_problem(path)
    assert (problem.code, problem.message) == ("file-unreadable", f"cannot read '{path}': {reason}")


def test_binary_junk_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "junk.yaml"
    path.write_bytes(b"id: x\nab\x00\x01\x02")
    problem = file_problem(path)
    assert (problem.line, problem.column, problem.code) == (2, 3, "not-text")
    assert problem.message == f"'{path}' is not a text file (it contains NUL bytes)"


def test_invalid_utf8_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("id: x\nname: café\n".encode("latin-1"))
    problem = file_problem(path)
    assert (problem.line, problem.column, problem.code) == (2, 10, "not-text")
    assert problem.message == f"'{path}' is not UTF-8 text (byte 0xe9); save it as UTF-8"


def test_utf16_is_named(tmp_path: Path) -> None:
    path = tmp_path / "wide.yaml"
    path.write_bytes("id: x\n".encode("utf-16"))
    assert file_problem(path).message == f"'{path}' looks like UTF-16 text; save it as UTF-8"


def test_third_party_errors_are_chained_not_leaked(tmp_path: Path) -> None:
    with pytest.raises(BlueprintError) as info:
        load_text("a: b: c\n", "x", "yaml")
    assert isinstance(info.value.__cause__, yaml.YAMLError)
    with pytest.raises(BlueprintError) as info:
        load_text("{", "x", "json")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    with pytest.raises(BlueprintError) as info:
        load(tmp_path / "missing.yaml")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_a_large_blueprint_loads_with_positions() -> None:
    lines = ["id: big", "nodes:"]
    for i in range(2000):
        lines += [f"  - id: n{i}", f"    uses: tasks.f{i % 7}", "    config: {maxRetries: 2}"]
    doc = load_text("\n".join(lines) + "\n", "big.yaml", "yaml")
    assert len(doc.data["nodes"]) == 2000
    assert doc.where(("nodes", 1999, "config", "maxRetries")) == (2 + 3 * 1999 + 3, 26)


# -- properties --------------------------------------------------------------------------------

YAMLISH = st.text(alphabet=st.sampled_from([*"ab1 :-[]{},'\"&*!#|>\n\t?.~%@`\\", "\x00", "é"]))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_well_formed(text: str, fmt: str) -> None:
    try:
        doc = load_text(text, "p.yaml", fmt)  # type: ignore[arg-type]
    except BlueprintError as exc:
        assert exc.problems
        assert all(p.line >= 1 and p.column >= 1 and p.path.startswith("$") for p in exc.problems)
    else:
        assert isinstance(doc.data, dict)
        json.dumps(doc.data, allow_nan=False)  # whatever loads is plain, finite JSON data


@FAST
@given(st.one_of(st.text(), YAMLISH))
def test_any_text_loads_or_raises_blueprint_error(text: str) -> None:
    assert_well_formed(text, "yaml")
    assert_well_formed(text, "json")


@FAST
@given(st.binary(), st.sampled_from([".yaml", ".json"]))
def test_any_bytes_load_or_raise_blueprint_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes, ext: str
) -> None:
    path = tmp_path_factory.mktemp("bytes") / f"f{ext}"
    path.write_bytes(raw)
    try:
        load(path)
    except BlueprintError as exc:
        assert all(p.line >= 1 and p.column >= 1 for p in exc.problems)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(st.dictionaries(st.text(), JSONISH, max_size=5))
def test_json_round_trips_with_positions_everywhere(data: dict[str, object]) -> None:
    text = json.dumps(data, indent=2)
    doc = load_text(text, "rt.json", "json")
    assert doc.data == data
    for key in data:
        line, column = doc.where((key,))
        assert line >= 1 and column >= 1
