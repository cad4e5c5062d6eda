"""`Frozen`: `__eq__`, `__hash__` and `__repr__` for frozen dataclasses, written once; `Mutable`:
`__eq__` and `__repr__` for the others. Stdlib only.

`@dataclass(frozen=True, slots=True)` writes six methods per class as source text and compiles
each (`exec`): about half a millisecond a class on Python 3.11, and the events and the model
are 26 classes that every command imports. A class declared
`@dataclass(frozen=True, slots=True, eq=False, repr=False)` on top of `Frozen` gets the three
that need no per-class code from here instead, and they behave as the generated ones do:
equal when of the very same class with equal field tuples (`NotImplemented` otherwise), the
hash of that tuple, and `Name(field=value!r, ...)` with `...` for a value that contains itself;
each honours `field(compare=..., hash=..., repr=...)`. A mutable dataclass declared with
``eq=False, repr=False`` on top of `Mutable` gets the same `__eq__` and `__repr__`, and no hash,
as `@dataclass` leaves a mutable class with `eq=True`.

`fast_frozen` and `fast_mutable` go further, for the classes every run imports (about 50:
events, model, problems, results, the engine's records): nothing is compiled per class.
`@dataclass(frozen=True)` compiles a `__setattr__` and a `__delattr__` per class, two thirds of
the cost of such a class (≈0.5 of 0.8 ms on this 2-core host); `fast_frozen` has `@dataclass`
build the class as a mutable one and gives it the shared `__setattr__`/`__delattr__` below,
which refuse as the generated ones do (`FrozenInstanceError`, the same messages), and the
`__getstate__` / `__setstate__` a frozen slotted dataclass gets, so pickling and copying work.
The one difference is introspection: such a class's `__dataclass_params__.frozen` is False
(the dataclass machinery checks that flag between bases, so all of a hierarchy must be
declared the same way: a `@dataclass(frozen=True)` class on top of a `fast_frozen` one is
refused at import). The `__init__` of both comes from `slot_init`: a frozen class's stores
each field through its slot's descriptor, where the generated one calls `object.__setattr__`
per field (a third less for the 14 fields of `NodeSucceeded`); a mutable class's assigns
them as `self.name = name` does (a third of the descriptor calls' cost: 1.6 µs to 0.56 µs for
the nine fields of a chunk of items). Its code is compiled once per shape of parameters, not
once per class. Together: 45 ms of class creation in a one-shot run
came down to 12 ms.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from operator import attrgetter
from types import CodeType, FunctionType
from typing import Any, TypeVar, dataclass_transform

_Getter = Callable[[Any], tuple[Any, ...]]
_GETTERS: dict[type, tuple[_Getter, _Getter, tuple[str, ...]]] = {}


def _getter(names: tuple[str, ...]) -> _Getter:
    """`obj` -> the tuple of those attributes (always a tuple, as the generated code builds)."""
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names)


def _of(cls: type) -> tuple[_Getter, _Getter, tuple[str, ...]]:
    found = _GETTERS.get(cls)
    if found is None:
        fs: tuple[Field[Any], ...] = fields(cls)
        compared = tuple(f.name for f in fs if f.compare)
        hashed = tuple(f.name for f in fs if (f.compare if f.hash is None else f.hash))
        shown = tuple(f.name for f in fs if f.repr)
        found = _GETTERS[cls] = (_getter(compared), _getter(hashed), shown)
    return found


class Frozen:
    """The base of a frozen dataclass declared with ``eq=False, repr=False``."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            compared = _of(self.__class__)[0]
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_of(self.__class__)[1](self))

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in _of(self.__class__)[2])
        return f"{self.__class__.__qualname__}({shown})"


class Mutable(Frozen):
    """The base of a mutable dataclass declared with ``eq=False, repr=False``: unhashable."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]


_T = TypeVar("_T")
# What the generated `__init__` shows for a field with a `default_factory`: `<factory>`.
_FACTORY: Any = getattr(dataclasses, "_HAS_DEFAULT_FACTORY", object())
_INITVAR: Any = getattr(dataclasses, "_FIELD_INITVAR", object())


@dataclass_transform(frozen_default=True, eq_default=False, field_specifiers=(field,))
def fast_frozen(cls: type[_T]) -> type[_T]:
    """``@dataclass(frozen=True, slots=True, eq=False, repr=False)`` on top of `Frozen`, with
    the shared `__setattr__`, `__delattr__`, `__getstate__` and `__setstate__` below and the
    `__init__` written by `slot_init` instead of generated ones."""
    made: Any = dataclass(slots=True, init=False, eq=False, repr=False)(cls)
    made.__setattr__ = _frozen_setattr
    made.__delattr__ = _frozen_delattr
    made.__getstate__ = _frozen_getstate
    made.__setstate__ = _frozen_setstate
    return slot_init(made)


@dataclass_transform(eq_default=False, field_specifiers=(field,))
def fast_mutable(cls: type[_T]) -> type[_T]:
    """``@dataclass(slots=True, eq=False, repr=False)`` on top of `Mutable`, with the
    `__init__` written by `slot_init` instead of the generated one."""
    return slot_init(dataclass(slots=True, init=False, eq=False, repr=False)(cls))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    # as generated: refused on the dataclass itself, and for a field on a plain subclass
    if "__dataclass_fields__" in type(self).__dict__ or name in self.__dataclass_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _frozen_delattr(self: Any, name: str) -> None:
    if "__dataclass_fields__" in type(self).__dict__ or name in self.__dataclass_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
    object.__delattr__(self, name)


def _frozen_getstate(self: Any) -> list[Any]:
    return [getattr(self, f.name) for f in fields(self)]


def _frozen_setstate(self: Any, state: list[Any]) -> None:
    for f, value in zip(fields(self), state, strict=False):
        object.__setattr__(self, f.name, value)


def slot_init(cls: type[_T]) -> type[_T]:
    """Give `cls`, a slotted dataclass declared with ``init=False``, the `__init__` `@dataclass`
    would write, with the same parameters, defaults, default factories and annotations, but
    storing each field through its slot's descriptor (which a frozen class's `__setattr__`
    does not stand in front of), or with a plain attribute store when the class has
    `object.__setattr__`. Only when every field takes part in `__init__` (keyword-only
    ones too) and there is no `__post_init__` (a `TypeError` otherwise).

    Nothing is compiled per class: the body depends only on the shape of the parameters (how
    many, which are keyword-only, which have a default factory), so the code of each shape is
    compiled once (`_shape`) and a class takes a copy of it with its own parameter names, its
    own setters as the code's globals, and its defaults."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if params.init or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: slot_init takes a slotted dataclass with init=False")
    fs: tuple[Field[Any], ...] = fields(cls)  # type: ignore[arg-type]
    every = cls.__dataclass_fields__.values()  # type: ignore[attr-defined]
    if (
        hasattr(cls, "__post_init__")
        or any(not f.init or f.name == "self" for f in fs)
        or any(getattr(f, "_field_type", None) is _INITVAR for f in every)
    ):
        raise TypeError(f"{cls.__name__}: slot_init takes fields that are all in __init__")
    # as generated: the keyword-only parameters after the others, each group in field order
    ordered = [f for f in fs if not f.kw_only] + [f for f in fs if f.kw_only]
    env: dict[str, Any] = {"_FACTORY": _FACTORY}
    defaults: list[Any] = []
    keyword_defaults: dict[str, Any] = {}
    for i, f in enumerate(ordered):
        slot = next(k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__)
        env[f"_set_{i}"] = slot.__set__
        default = f.default
        if f.default_factory is not MISSING:
            env[f"_factory_{i}"] = f.default_factory
            default = _FACTORY
        if default is not MISSING:
            if f.kw_only:
                keyword_defaults[f.name] = default
            else:
                defaults.append(default)
    # A mutable class stores each field as `self.<name> = ...` does (the interpreter's own
    # slot store, a third of the cost of calling the descriptor); a frozen one, whose `__setattr__`
    # refuses, through the descriptor.
    stores = cls.__setattr__ is object.__setattr__
    shape = _shape(
        tuple(f.default_factory is not MISSING for f in ordered if not f.kw_only),
        tuple(f.default_factory is not MISSING for f in ordered if f.kw_only),
        stores,
    )
    names = {f"_attr_{i}": f.name for i, f in enumerate(ordered)}
    code = shape.replace(
        co_varnames=("self", *(f.name for f in ordered)),
        co_names=tuple(names.get(n, n) for n in shape.co_names),
        co_qualname=f"{cls.__qualname__}.__init__",
    )
    init = FunctionType(code, env, "__init__", tuple(defaults) or None)
    init.__kwdefaults__ = keyword_defaults or None
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {**{f.name: f.type for f in ordered}, "return": None}
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


#: `__init__` code by shape: per positional and per keyword-only parameter, whether it has a
#: default factory (`_set_<i>` and `_factory_<i>` are the class's own, given as globals), and
#: whether it stores attributes (`self._attr_<i> = ...`, renamed per class) or calls setters
_SHAPES: dict[tuple[tuple[bool, ...], tuple[bool, ...], bool], CodeType] = {}


def _shape(positional: tuple[bool, ...], keywords: tuple[bool, ...], stores: bool) -> CodeType:
    code = _SHAPES.get((positional, keywords, stores))
    if code is None:
        names = [f"_{i}" for i in range(len(positional) + len(keywords))]
        params = names[: len(positional)] + (["*"] if keywords else []) + names[len(positional) :]
        body = []
        for i, factory in enumerate(positional + keywords):
            if factory:
                body.append(f" if _{i} is _FACTORY: _{i} = _factory_{i}()")
            body.append(f" self._attr_{i} = _{i}" if stores else f" _set_{i}(self, _{i})")
        source = f"def __init__({', '.join(['self', *params])}):\n" + "\n".join(body or [" pass"])
        env: dict[str, Any] = {}
        exec(source + "\n", env)  # built from counts alone, never from names or user text
        code = _SHAPES[(positional, keywords, stores)] = env["__init__"].__code__
    return code
