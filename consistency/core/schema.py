"""Declarative config fields and the one validator that reads them (docs/architecture.md, "One config schema").

A config block is an ordered ``{name: Field}``: each field has its default, its type (from the default unless
given), optional choices or numeric bounds, one line of doc and an optional fix hint. :func:`check_block` checks a
block of a config against its fields and raises one :class:`ConfigError` line
``config.<block>.<field>: <what is wrong>; <the fix>``. The value checks (:func:`check_number`, :func:`check_choice`,
:func:`check_flag`, :func:`require`) are also what hand-written cross-field rules use, so every message has one form.

Bottom layer: no jax, no other module of the package but ``errors``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import ml_collections

from consistency.core.errors import ConfigError

KINDS = ("number", "integer", "bool", "choice", "str", "tuple", "any")
NO_DEFAULT = object()   # check_number / check_choice: the field has no schema default to quote


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field. ``kind`` defaults to the default's type (bool, integer, number, str, tuple); a bound may be
    a number or the dotted name of another field (``'diffusion.sigma_max'``), read from the config being checked."""

    default: Any
    doc: str = ""
    kind: str | None = None
    choices: tuple = ()
    lo: float | str | None = None
    hi: float | str | None = None
    lo_open: bool = False
    hi_open: bool = False
    fix: str = ""

    def __post_init__(self):
        if self.kind is None:
            object.__setattr__(self, "kind", "choice" if self.choices else _kind_of(self.default))
        if self.kind not in KINDS:
            raise ValueError(f"Field kind {self.kind!r} is not one of {KINDS}")


def _kind_of(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (tuple, list)):
        return "tuple"
    return "any"


Fields = Mapping[str, Field]


def defaults(fields: Fields) -> ml_collections.ConfigDict:
    """A block of every field's default, in declaration order."""
    block = ml_collections.ConfigDict()
    for name, field in fields.items():
        block[name] = field.default
    return block


def default_of(fields: Fields, name: str):
    """The default of field ``name`` of a block (:data:`NO_DEFAULT` when the block has no such field)."""
    return fields[name].default if name in fields else NO_DEFAULT


# ------------------------------------------------------------------------------------------------------------------
# Value checks: one line ``config.<field>: <what is wrong>; <the fix>``
# ------------------------------------------------------------------------------------------------------------------

def fail(field: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"config.{field}: {problem}; {fix}")


def require(ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise fail(field, problem, fix)


def bounds_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _with_default(hint: str, default) -> str:
    return hint if default is NO_DEFAULT or default is None else f"{hint} (default {default!r})"


def check_number(value, field: str, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False,
                 integer: bool = False, fix: str = "", default=NO_DEFAULT) -> None:
    """``value`` is a finite number (an int if ``integer``) within the bounds; else a one-line ConfigError."""
    bounded = lo is not None or hi is not None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or (integer and not isinstance(value, int)):
        problem = f"{value!r} is not {'an integer' if integer else 'a finite number'}"
    elif (lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and (value >= hi if hi_open else value > hi)):
        problem = f"{value!r} is not {bounds_text(lo, hi, lo_open, hi_open)}"
    else:
        return
    hint = fix or (f"use a value {bounds_text(lo, hi, lo_open, hi_open)}" if bounded else "use a number")
    raise fail(field, problem, _with_default(hint, default))


def check_choice(value, field: str, choices, default=NO_DEFAULT) -> None:
    require(value in choices, field, f"{value!r} is not one of {', '.join(map(repr, choices))}",
            "choose one of them" + ("" if default is NO_DEFAULT else f" (default {default!r})"))


def check_flag(value, field: str) -> None:
    require(isinstance(value, bool), field, f"{value!r} is not a bool", "use True or False")


# ------------------------------------------------------------------------------------------------------------------
# The generic validator
# ------------------------------------------------------------------------------------------------------------------

def _resolve(bound, config):
    """A bound: a number, or the dotted name of another field of ``config``."""
    if not isinstance(bound, str):
        return bound
    node = config
    for key in bound.split("."):
        node = node[key]
    return node


def check_field(value, field: Field, name: str, config=None) -> None:
    """``value`` of field ``name`` (dotted, without ``config.``) against its declaration; one ConfigError line."""
    kind = field.kind
    if kind in ("number", "integer"):
        check_number(value, name, _resolve(field.lo, config), _resolve(field.hi, config), lo_open=field.lo_open,
                     hi_open=field.hi_open, integer=kind == "integer", fix=field.fix, default=field.default)
    elif kind == "choice":
        check_choice(value, name, field.choices, field.default)
    elif kind == "bool":
        check_flag(value, name)
    elif kind == "str":
        require(isinstance(value, str), name, f"{value!r} is not a string",
                field.fix or f"use a string such as {field.default!r}")
    elif kind == "tuple":
        require(isinstance(value, (tuple, list)), name, f"{value!r} is not a tuple",
                field.fix or f"use a tuple such as {tuple(field.default)!r}")


def check_block(config, block: str, fields: Fields) -> None:
    """Every declared field of ``config.<block>``, in declaration order (a missing field is left to the caller)."""
    values = config[block]
    for name, field in fields.items():
        if name in values:
            check_field(values[name], field, f"{block}.{name}", config)


def docs(fields: Fields) -> dict[str, str]:
    """``{name: doc}`` of a block (``--help``, docs)."""
    return {name: field.doc for name, field in fields.items()}
