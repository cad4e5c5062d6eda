"""The runtime half of edge expressions: resource limits and the guarded operations.

`expr` compiles an expression into closures; every closure that touches user data calls into
this module when `CompiledExpr.evaluate` runs. Reading a name, `x.key` or `x[i]` goes through
`name_reader` / `attr_reader` / `index_reader`, which read mapping keys and never attributes.
Arithmetic and the callable builtins go through guarded versions that refuse results past
`MAX_INT_BITS` or the per-evaluation `BUDGET`, so a one-line expression cannot exhaust memory
or CPU. The budget is charged for what an operation costs, not only for what it keeps:

- building a sequence, one unit per element (a copy, `+`, `*`) or character;
- repeating a sequence of containers (`[[0] * 1000] * 1000`), the elements of every copy of
  every container in it, counted through the shared copies (what comparing, hashing or
  printing the result walks), not only the outer list;
- big integers, one unit per product of their 32-bit word counts for `*`, `//`, `%`, `**`
  and `round` (schoolbook cost), and the square of the word count (or of the number of digits
  over 8) for `str()` of an int and `int()` of a string, which CPython does in quadratic time.

`check_data` refuses complex, NaN and infinite values in what an expression delivers as data
(a transform, a `${{ }}` value). Everything here raises `Fail`, which `expr` turns into
`ExprEvalError`.

It is separate from the compiler so that what an expression may cost at run time is defined,
and can be reviewed, in one place.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import reprlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

Fn = Callable[[Mapping[str, Any]], Any]

MAX_INT_BITS = 14_000  # about 4,200 decimal digits: every integer stays printable by str()
MAX_STR_DIGITS = 4300  # CPython's default int<->str limit, kept even if a process lifts it
MAX_ROUND_DIGITS = 1000  # round(int, -n) computes 10**n
BUDGET = 10_000_000  # elements/characters one evaluation may build in total

_SEQS = (str, list, tuple)
_CONTAINERS = (list, tuple, dict, set, frozenset)
_STR_INT_LIMIT = 10**MAX_STR_DIGITS


class Fail(Exception):
    """Raised inside evaluation; `CompiledExpr.evaluate` adds the expression to the message."""


budget = threading.local()  # what is left of BUDGET for the evaluation on this thread


def charge(units: int) -> None:
    """Spend `units` of this evaluation's budget; `Fail` once it would go below zero."""
    left: int = budget.left - units
    if left < 0:
        raise Fail(f"the result would be too large (over {BUDGET:,} elements in all)")
    budget.left = left


def name_reader(name: str) -> Fn:
    """A closure reading `name` from the scope; a name with no value is a `Fail`."""

    def load(scope: Mapping[str, Any]) -> Any:
        try:
            return scope[name]
        except KeyError:
            raise Fail(f"'{name}' has no value: it did not run") from None

    return load


def attr_reader(obj_fn: Fn, key: str, what: str) -> Fn:
    """A closure for `x.key`: the mapping key `key` of what `obj_fn` returns, never an attribute."""

    def read(scope: Mapping[str, Any]) -> Any:
        obj = obj_fn(scope)
        if type(obj) is dict or isinstance(obj, Mapping):
            try:
                return obj[key]
            except KeyError:
                raise Fail(_no_key(key, what, obj)) from None
        raise Fail(f"cannot read '.{key}' of {what}: it is {_kind(obj)}, not a mapping")

    return read


def index_reader(obj_fn: Fn, key_fn: Fn, what: str) -> Fn:
    """A closure for `x[i]` and `x[a:b]` on a mapping, string, list or tuple; slices are charged."""

    def read(scope: Mapping[str, Any]) -> Any:
        obj, key = obj_fn(scope), key_fn(scope)
        if type(obj) is dict or isinstance(obj, Mapping):
            try:
                return obj[key]
            except KeyError:
                raise Fail(_no_key(key, what, obj)) from None
        if not isinstance(obj, _SEQS):
            raise Fail(f"cannot index {what}: it is {_kind(obj)}")
        try:
            value = obj[key]
        except IndexError:
            raise Fail(
                f"index {_show(key)} is out of range for {what} (length {len(obj)})"
            ) from None
        if type(key) is slice:  # a copy: charged, or [x[:], x[:], ...] could multiply memory
            charge(len(value))
        return value

    return read


def _no_key(key: Any, what: str, obj: Mapping[Any, Any]) -> str:
    keys = [k if isinstance(k, str) else _show(k) for k in itertools.islice(obj, 10)]
    more = f", ... ({len(obj) - 10} more)" if len(obj) > 10 else ""
    found = f"keys: {', '.join(keys)}{more}" if keys else "it is empty"
    return f"{_show(key)} is not a key of {what} ({found})"


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, _SEQS) and isinstance(b, _SEQS):
        charge(len(a) + len(b))
    return a + b


def _mul(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        bits_a, bits_b = a.bit_length(), b.bit_length()
        if bits_a + bits_b > MAX_INT_BITS:
            raise Fail(f"the product would have over {MAX_INT_BITS:,} bits")
        if bits_a > 64 and bits_b > 64:
            charge((bits_a >> 5) * (bits_b >> 5))
    elif isinstance(a, _SEQS) and isinstance(b, int):
        _charge_repeat(a, b)
    elif isinstance(b, _SEQS) and isinstance(a, int):
        _charge_repeat(b, a)
    return a * b


def _charge_repeat(seq: Any, times: int) -> None:
    """`seq * times`: its elements, and for a list or tuple holding containers, everything in
    each copy (the copies share them, but whatever walks the result walks each one)."""
    if times <= 0:
        return
    charge(len(seq) * times)
    if times > 1 and not isinstance(seq, str) and not _SCALARS.issuperset(map(type, seq)):
        inner = deep_cost(seq, budget.left // times + 1, _long_text) - 2 - 2 * len(seq)
        if inner > 0:
            charge(inner * times)


def _charge_ints(a: int, b: int) -> None:
    """A product or division of two integers: schoolbook cost, in 32-bit words; free below
    64 bits (constant time) and when one side is small (linear time)."""
    bits_a = a.bit_length()
    if bits_a > 64:
        bits_b = b.bit_length()
        if bits_b > 64:
            charge((bits_a >> 5) * (bits_b >> 5))


def _floordiv(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        _charge_ints(a, b)
    return a // b


def _pow(a: Any, b: Any) -> Any:
    # a negative or float exponent gives a float, which overflows quickly and cheaply
    big = isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1
    if big:
        bits = b * math.log2(abs(a)) if b <= MAX_INT_BITS else math.inf
        if bits > MAX_INT_BITS:
            raise Fail(f"the power would have over {MAX_INT_BITS:,} bits")
        words = int(bits) >> 5
        if words > 1:
            charge(words * words)
    return a**b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, (str, bytes)):  # printf formatting: '%999999999d' % 1 is a memory bomb
        raise Fail("'%' formatting of strings is not supported; use str(x) and +")
    if type(a) is int and type(b) is int:
        _charge_ints(a, b)
    return a % b


def _sum(values: Any, start: Any = 0) -> Any:
    if not isinstance(start, (int, float)):  # sum(lists, []) concatenates, quadratically
        raise Fail(f"sum() adds numbers; its start is {_kind(start)}")
    return sum(values, start)


def _round(number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise Fail(f"round() takes at most {MAX_ROUND_DIGITS} digits")
    if isinstance(number, int) and isinstance(ndigits, int) and ndigits < 0:
        _charge_ints(number, 10 ** (-ndigits))  # a division by 10**-ndigits
    return round(number, ndigits)


def _int(value: Any = 0, *base: Any) -> int:
    if isinstance(value, (str, bytes)):
        if len(value) > MAX_STR_DIGITS:  # quadratic to parse
            raise Fail(f"int() of a string longer than {MAX_STR_DIGITS} characters")
        charge((len(value) >> 3) ** 2)
    return int(value, *base)


def _str(value: Any = "") -> str:
    if isinstance(value, int) and abs(value) >= _STR_INT_LIMIT:
        raise Fail(f"str() of an integer with more than {MAX_STR_DIGITS} digits")
    if isinstance(value, _CONTAINERS) or type(value) is int:
        # [s] * 1000 is small, but its text is 1000 copies of s
        charge(deep_cost(value, budget.left + 1))
    return str(value)


def _leaf_cost(item: Any) -> int:
    """About what printing `item` (a non-container) costs: its characters; an int's digits
    plus the square of its words (CPython converts an int to text in quadratic time)."""
    if isinstance(item, str):
        return len(item) + 2
    if isinstance(item, int):
        bits = item.bit_length()
        return bits // 3 + 1 + (bits >> 5) ** 2
    return 24


def _long_text(item: Any) -> int:
    """What `_charge_repeat` counts for a non-container: a long string's characters."""
    return len(item) if isinstance(item, str) and len(item) > 64 else 0


def deep_cost(value: Any, cap: int, leaf: Callable[[Any], int] = _leaf_cost) -> int:
    """What walking `value` (printing, comparing or hashing it) costs: two units per element of
    each container, `leaf` of everything else, counting a container that appears n times n
    times but looking at each one only once; stops counting past `cap`.

    Iterative (data may nest deeply) and memoised by identity, so `[[[0] * 1000] * 1000] * 1000`
    is priced at 2 * 10**9 after looking at three lists."""
    if not isinstance(value, _CONTAINERS):
        return leaf(value)
    done: dict[int, int] = {}
    opened: set[int] = set()  # on the path being walked: a cycle is counted once
    stack = [value]
    while stack:
        item = stack[-1]
        key = id(item)
        if key in done:
            stack.pop()
            continue
        kids = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        if key not in opened:
            opened.add(key)
            todo = [
                k
                for k in kids
                if isinstance(k, _CONTAINERS) and id(k) not in done and id(k) not in opened
            ]
            if todo:
                stack.extend(todo)
                continue
        total = 2 * len(item) + 2
        for kid in kids:
            total += done.get(id(kid), 2) if isinstance(kid, _CONTAINERS) else leaf(kid)
            if total > cap:
                return total
        done[key] = total
        stack.pop()
    return done[id(value)]


_PLAIN = frozenset({int, str, bool, type(None)})
_SCALARS = frozenset({int, float, bool, type(None)})  # what `_long_text` counts nothing for


def check_data(value: Any) -> None:
    """`Fail` if `value` holds a complex number, a NaN or an infinity: no JSON has them."""
    kind = type(value)
    if kind in _PLAIN or (kind is float and math.isfinite(value)):
        return  # the common case, at no cost
    seen: set[int] = set()  # each container once: shared or cyclic data is walked once
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _PLAIN:
            continue
        if kind is list or kind is tuple or kind is dict:
            if id(item) in seen:
                continue
            seen.add(id(item))
            parts = (item, item.values()) if kind is dict else (item,)
            for part in parts:  # type() of every element in C; a loop only for the rest
                if not _PLAIN.issuperset(map(type, part)):
                    stack.extend(x for x in part if type(x) not in _PLAIN)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise Fail(f"its value holds {item!r}, which is no JSON number")
        elif isinstance(item, complex):
            raise Fail(f"its value holds the complex number {item!r}, which JSON cannot hold")
        elif isinstance(item, (Mapping, list, tuple, set, frozenset)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend([*item.keys(), *item.values()] if isinstance(item, Mapping) else item)


FUNCS: dict[str, tuple[Callable[..., Any], int, int]] = {  # name: (function, min, max args)
    "abs": (abs, 1, 1),
    "all": (all, 1, 1),
    "any": (any, 1, 1),
    "bool": (bool, 0, 1),
    "float": (float, 0, 1),
    "int": (_int, 0, 2),
    "len": (len, 1, 1),
    "max": (max, 1, 99),
    "min": (min, 1, 99),
    "round": (_round, 1, 2),
    "str": (_str, 0, 1),
    "sum": (_sum, 1, 2),
}
BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: _floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40


def _show(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception:  # a huge int, or a user object whose __repr__ fails
        return f"<{type(value).__name__}>"


def _kind(value: Any) -> str:
    name = type(value).__name__
    return "None" if value is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
