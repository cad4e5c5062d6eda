"""`flowrun.frozen.Frozen` and `Mutable` behave as the methods `@dataclass` writes itself."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import math
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from flowrun.frozen import Frozen, Mutable, fast_frozen, fast_mutable, slot_init


@dataclass(frozen=True, slots=True)
class Generated:
    a: Any
    b: Any = 1
    hidden: Any = field(default=0, repr=False)
    loose: Any = field(default=0, compare=False)
    unhashed: Any = field(default=0, hash=False)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Written(Frozen):
    a: Any
    b: Any = 1
    hidden: Any = field(default=0, repr=False)
    loose: Any = field(default=0, compare=False)
    unhashed: Any = field(default=0, hash=False)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Empty(Frozen):
    pass


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class One(Frozen):
    x: Any


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class WrittenChild(Written):
    pass


NAN = math.nan
CASES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1,), {}),
    ((1, 2), {}),
    ((1, 2), {"hidden": 5}),
    ((1, 2), {"loose": 5}),
    ((1, 2), {"unhashed": 5}),
    (([1],), {}),
    ((NAN,), {}),
    (("x", None), {"hidden": "h", "loose": [], "unhashed": ()}),
]


def _same_renamed(text: str) -> str:
    return text.replace("Generated(", "Written(")


@pytest.mark.parametrize("left", CASES)
@pytest.mark.parametrize("right", CASES)
def test_equality_and_hash_as_generated(left: Any, right: Any) -> None:
    gl, gr = Generated(*left[0], **left[1]), Generated(*right[0], **right[1])
    wl, wr = Written(*left[0], **left[1]), Written(*right[0], **right[1])
    assert (wl == wr) is (gl == gr)
    assert (wl != wr) is (gl != gr)
    try:
        expected: object = hash(gl)
    except TypeError as exc:
        expected = type(exc)
    try:
        got: object = hash(wl)
    except TypeError as exc:
        got = type(exc)
    assert got == expected
    assert repr(wl) == _same_renamed(repr(gl))


def test_the_very_same_class_only() -> None:
    assert Written(1) != WrittenChild(1)
    assert Written(1).__eq__(WrittenChild(1)) is NotImplemented
    assert Written(1).__eq__((1, 1, 0)) is NotImplemented
    assert Written(1) != Generated(1)
    assert WrittenChild(1) == WrittenChild(1)
    assert repr(WrittenChild(2)) == "WrittenChild(a=2, b=1, loose=0, unhashed=0)"


def test_no_fields_and_one_field() -> None:
    assert Empty() == Empty()
    assert hash(Empty()) == hash(())
    assert repr(Empty()) == "Empty()"
    assert One(NAN) == One(NAN)  # the same object: tuples compare by identity first
    assert One(float("nan")) != One(float("nan"))
    assert hash(One(3)) == hash((3,))
    assert {One(1), One(1), One(2)} == {One(1), One(2)}


def test_a_value_that_holds_itself() -> None:
    loop: list[Any] = []
    w, g = Written(loop), Generated(loop)
    loop.append(w)
    assert repr(w) == "Written(a=[...], b=1, loose=0, unhashed=0)"
    loop[0] = g
    assert repr(g) == "Generated(a=[...], b=1, loose=0, unhashed=0)"


def test_still_frozen_and_slotted() -> None:
    w = Written(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.a = 2  # type: ignore[misc]
    assert not hasattr(w, "__dict__")
    assert dataclasses.replace(w, a=3) == Written(3)


#: the modules every command imports, whose frozen dataclasses all take the three from `Frozen`
MODULES = (
    "flowrun.api",
    "flowrun.blueprint.loader",
    "flowrun.blueprint.resolve",
    "flowrun.engine.itemsources",
    "flowrun.engine.routing",
    "flowrun.errors",
    "flowrun.events",
    "flowrun.expr.compiler",
    "flowrun.expr.template",
    "flowrun.model",
    "flowrun.node",
    "flowrun.store.records",
)


def _is_frozen(cls: type) -> bool:
    """Frozen as declared (`@dataclass(frozen=True)`) or as `fast_frozen` makes it."""
    params: Any = cls.__dataclass_params__  # type: ignore[attr-defined]
    setter: Any = cls.__setattr__
    return bool(params.frozen) or setter is not object.__setattr__


def _frozen_classes() -> list[type]:
    found = []
    for name in MODULES:
        mod = importlib.import_module(name)
        for _, c in inspect.getmembers(mod, inspect.isclass):
            dc = c.__module__ == name and dataclasses.is_dataclass(c)
            if dc and _is_frozen(c):
                found.append(c)
    return found


def test_the_classes_are_found() -> None:
    names = {c.__name__ for c in _frozen_classes()}
    assert {"NodeSucceeded", "Graph", "Problem", "Result", "RunMeta"} <= names


@pytest.mark.parametrize("cls", _frozen_classes())
def test_the_frozen_classes_use_it(cls: type) -> None:
    """None of the three is generated for them; they stay frozen and slotted as declared."""
    assert issubclass(cls, Frozen)
    for name in ("__eq__", "__hash__", "__repr__"):
        if name == "__repr__" and "__repr__" in cls.__dict__:
            continue  # a repr of the class's own
        assert getattr(cls, name) is getattr(Frozen, name), name


@dataclass(slots=True)
class GeneratedMutable:
    a: Any
    b: Any = 1
    loose: Any = field(default=0, compare=False)


@dataclass(slots=True, eq=False, repr=False)
class WrittenMutable(Mutable):
    a: Any
    b: Any = 1
    loose: Any = field(default=0, compare=False)


@dataclass(eq=False, repr=False)
class WrittenMutableDict(Mutable):
    a: Any


def test_mutable_as_generated() -> None:
    for left, right in [((1,), (1,)), ((1, 2), (1, 3)), ((1, 2, 3), (1, 2, 4)), (([],), ([],))]:
        g = GeneratedMutable(*left) == GeneratedMutable(*right)
        assert (WrittenMutable(*left) == WrittenMutable(*right)) is g
        assert repr(WrittenMutable(*left)) == repr(GeneratedMutable(*left)).replace(
            "GeneratedMutable(", "WrittenMutable("
        )
    assert GeneratedMutable.__hash__ is None and WrittenMutable.__hash__ is None
    with pytest.raises(TypeError):
        hash(WrittenMutable(1))
    w = WrittenMutable(1)
    w.a = 2
    assert w == WrittenMutable(2)
    assert not hasattr(w, "__dict__")
    assert WrittenMutableDict(1) == WrittenMutableDict(1)
    assert WrittenMutableDict(1).__dict__ == {"a": 1}
    assert WrittenMutable(1) != WrittenMutableDict(1)


#: modules whose mutable dataclasses all take `__eq__` and `__repr__` from `Mutable`
MUTABLE_MODULES = (
    "flowrun.api",
    "flowrun.display.plain",
    "flowrun.display.record",
    "flowrun.engine.kinds.base",
    "flowrun.engine.pools",
    "flowrun.engine.scheduler",
    "flowrun.report",
)


def _mutable_classes() -> list[type]:
    found = []
    for name in MUTABLE_MODULES:
        mod = importlib.import_module(name)
        for _, c in inspect.getmembers(mod, inspect.isclass):
            dc = c.__module__ == name and dataclasses.is_dataclass(c)
            if dc and not _is_frozen(c):
                found.append(c)
    return found


def test_the_mutable_classes_are_found() -> None:
    names = {c.__name__ for c in _mutable_classes()}
    assert {"RunOptions", "RunReport", "NodeRecord", "Bucket", "Work", "BatchState"} <= names


@pytest.mark.parametrize("cls", _mutable_classes())
def test_the_mutable_classes_use_it(cls: type) -> None:
    assert issubclass(cls, Mutable)
    for name in ("__eq__", "__repr__"):
        assert getattr(cls, name) is getattr(Frozen, name), name
    assert cls.__hash__ is None  # type: ignore[comparison-overlap]


@dataclass(frozen=True, slots=True)
class GeneratedInit:
    a: Any
    b: Any = 1
    c: list[Any] = field(default_factory=list)


@fast_frozen
class FastInit(Frozen):
    a: Any
    b: Any = 1
    c: list[Any] = field(default_factory=list)


@fast_frozen
class FastInitChild(FastInit):
    d: Any = None


def test_fast_frozen_init_as_generated() -> None:
    assert inspect.signature(FastInit) == inspect.signature(GeneratedInit)
    assert FastInit.__init__.__annotations__ == GeneratedInit.__init__.__annotations__
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((0,), {}),
        ((0, 2), {}),
        ((0,), {"c": [3]}),
        ((), {"a": 1, "b": 2}),
    ]
    for args, kwargs in calls:
        fast, generated = FastInit(*args, **kwargs), GeneratedInit(*args, **kwargs)
        assert dataclasses.astuple(fast) == dataclasses.astuple(generated)
    assert FastInit(0).c is not FastInit(0).c  # a fresh default per instance
    assert dataclasses.astuple(FastInitChild(1, 2, [], 4)) == (1, 2, [], 4)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'a'"):
        FastInit()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        FastInit(1, x=2)  # type: ignore[call-arg]
    fast = FastInit(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.a = 2  # type: ignore[misc]
    assert not hasattr(fast, "__dict__")
    assert dataclasses.replace(fast, b=5) == FastInit(1, 5)
    assert FastInit.__init__.__qualname__ == "FastInit.__init__"


@dataclass(frozen=True, slots=True)
class GeneratedKw:
    a: Any
    k: Any = field(kw_only=True)
    b: Any = 2
    m: list[Any] = field(default_factory=list, kw_only=True)


@fast_frozen
class FastKw(Frozen):
    a: Any
    k: Any = field(kw_only=True)
    b: Any = 2
    m: list[Any] = field(default_factory=list, kw_only=True)


def test_keyword_only_fields_as_generated() -> None:
    assert inspect.signature(FastKw) == inspect.signature(GeneratedKw)
    for args, kwargs in [((1,), {"k": 3}), ((1, 5), {"k": 3, "m": [4]}), ((), {"a": 0, "k": 0})]:
        assert dataclasses.astuple(FastKw(*args, **kwargs)) == dataclasses.astuple(
            GeneratedKw(*args, **kwargs)
        )
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'k'"):
        FastKw(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional argument"):
        FastKw(1, 2, 3)  # type: ignore[misc]


@dataclass(slots=True)
class GeneratedMutableInit:
    a: Any
    b: Any = 1
    c: list[Any] = field(default_factory=list)
    k: Any = field(default=None, kw_only=True)


@fast_mutable
class FastMutableInit(Mutable):
    a: Any
    b: Any = 1
    c: list[Any] = field(default_factory=list)
    k: Any = field(default=None, kw_only=True)


@fast_mutable
class FastMutableChild(FastMutableInit):
    _FACTORY: Any = 5  # a field named as a global of the written code


def test_fast_mutable_init_as_generated() -> None:
    """A mutable class's `__init__` assigns its fields (renamed per class), as generated."""
    assert inspect.signature(FastMutableInit) == inspect.signature(GeneratedMutableInit)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((0,), {}),
        ((0, 2), {"k": 4}),
        ((0,), {"c": [3]}),
        ((), {"a": 1, "b": 2}),
    ]
    for args, kwargs in calls:
        fast, generated = FastMutableInit(*args, **kwargs), GeneratedMutableInit(*args, **kwargs)
        assert dataclasses.astuple(fast) == dataclasses.astuple(generated)
    assert FastMutableInit(0).c is not FastMutableInit(0).c
    child = FastMutableChild(1, 2, [3], 4, k=6)
    assert dataclasses.astuple(child) == (1, 2, [3], 6, 4)  # fields in declared order
    assert FastMutableChild(1).c == [] and FastMutableChild(1)._FACTORY == 5
    m = FastMutableInit(1)
    m.b = 7
    assert m.b == 7 and not hasattr(m, "__dict__")
    code = FastMutableInit.__init__.__code__
    assert {"a", "b", "c", "k"} <= set(code.co_names)  # stored as attributes, no setters
    assert not any(n.startswith("_set_") for n in code.co_names)


def test_slot_init_refuses_what_it_cannot_write() -> None:
    @dataclass(frozen=True, slots=True, init=False)
    class NotInInit:
        a: Any = field(init=False, default=1)

    @dataclass(frozen=True, slots=True, init=False)
    class Posted:
        a: Any

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, init=False)
    class NoSlots:
        a: Any

    for cls in (NotInInit, Posted, NoSlots, GeneratedInit):
        with pytest.raises(TypeError):
            slot_init(cls)


@pytest.mark.parametrize("name", ["NodeStarted", "NodeSucceeded", "NodeSpec", "GraphNode"])
def test_the_hot_classes_take_the_written_init(name: str) -> None:
    cls = next(c for c in _frozen_classes() if c.__name__ == name)
    init: Any = cls.__dict__["__init__"]
    assert "_set_" in " ".join(init.__code__.co_names)
    assert list(inspect.signature(cls).parameters) == [f.name for f in dataclasses.fields(cls)]


class PlainChild(FastInit):
    """A subclass that is no dataclass, with a `__dict__`: as with a generated frozen class,
    its own attributes may be set, the fields may not."""


def test_fast_frozen_refuses_as_generated() -> None:
    fast, generated = FastInit(1), GeneratedInit(1)
    for obj in (fast, generated):
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'a'"):
            obj.a = 2  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'a'"):
            del obj.a
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'z'"):
        fast.z = 2  # type: ignore[attr-defined]  # (the generated one fails with a TypeError)
    assert fast.a == 1
    child = PlainChild(1)
    child.note = "x"  # type: ignore[attr-defined]
    assert child.note == "x"  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        child.a = 2  # type: ignore[misc]


def test_fast_frozen_pickles_and_copies() -> None:
    for obj in (FastInit(1, [2], [3]), FastInitChild(1, 2, [3], {"d": 4})):
        for twin in (pickle.loads(pickle.dumps(obj)), copy.copy(obj), copy.deepcopy(obj)):
            assert twin == obj and type(twin) is type(obj) and twin is not obj
    deep = copy.deepcopy(FastInit(1, 2, [3]))
    assert deep.c == [3] and deep.c is not FastInit(1, 2, [3]).c


def test_a_generated_frozen_class_cannot_extend_a_fast_one() -> None:
    """The one visible difference: the dataclass flag says not frozen, so mixing the two ways
    in one hierarchy fails at class creation, never later."""
    with pytest.raises(TypeError, match="frozen"):

        @dataclass(frozen=True, slots=True)
        class Mixed(FastInit):
            e: Any = None
