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
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import Field, fields
from operator import attrgetter
from typing import Any

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
