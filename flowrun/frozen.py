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

`fast_frozen` declares such a class built once per node or per event, with an `__init__`
from `slot_init`: it stores each field through its slot's descriptor, where
the generated one calls `object.__setattr__` per field (a third less for the 14 fields of
`NodeSucceeded`), and it is compiled instead of the generated one, not as well.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from operator import attrgetter
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
    the `__init__` written by `slot_init` instead of the generated one."""
    return slot_init(dataclass(frozen=True, slots=True, init=False, eq=False, repr=False)(cls))


def slot_init(cls: type[_T]) -> type[_T]:
    """Give `cls`, declared ``@dataclass(frozen=True, slots=True, init=False, ...)``, the
    `__init__` `@dataclass` would write, with the same parameters, defaults, default factories
    and annotations, but storing each field through its slot's descriptor. Only for fields that
    all take part in `__init__` positionally, and no `__post_init__` (a `TypeError` otherwise)."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not (params.frozen and not params.init and "__slots__" in cls.__dict__):
        raise TypeError(f"{cls.__name__}: slot_init takes a frozen slotted dataclass, init=False")
    fs: tuple[Field[Any], ...] = fields(cls)  # type: ignore[arg-type]
    every = cls.__dataclass_fields__.values()  # type: ignore[attr-defined]
    if (
        hasattr(cls, "__post_init__")
        or any(not f.init or f.kw_only for f in fs)
        or any(getattr(f, "_field_type", None) is _INITVAR for f in every)
    ):
        raise TypeError(f"{cls.__name__}: slot_init takes plain positional fields only")
    env: dict[str, Any] = {"_FACTORY": _FACTORY}
    args, body = [], []
    for f in fs:
        name = f.name
        slot = next(k.__dict__[name] for k in cls.__mro__ if name in k.__dict__)
        env[f"_set_{name}"] = slot.__set__
        if f.default is not MISSING:
            env[f"_default_{name}"] = f.default
            args.append(f"{name}=_default_{name}")
        elif f.default_factory is not MISSING:
            env[f"_factory_{name}"] = f.default_factory
            args.append(f"{name}=_FACTORY")
            body.append(f" if {name} is _FACTORY: {name} = _factory_{name}()")
        else:
            args.append(name)
        body.append(f" _set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or [" pass"]) + "\n"
    exec(source, env)  # built from the field names alone, as @dataclass builds its own
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {**{f.name: f.type for f in fs}, "return": None}
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
