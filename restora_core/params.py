"""Typed parameters shared by methods and degradations: a field with its default, meaning and
range, and validated construction from overrides. Torch-free: the job spec validates task
parameters in processes that never import torch."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_BOUNDS = (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
           ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))


def param(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None,
          choices: tuple[str, ...] | None = None) -> Any:
    """A parameter field: its default, a one-line meaning and its allowed range or choices
    (for a tuple, the range applies to each element)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    return field(default=default, metadata=meta)


def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(kind))
    return kind, False


def type_name(kind: Any) -> str:
    """How a parameter's type reads in listings: ``int``, ``int[4] | None``."""
    inner, optional = _optional(kind)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        name = f"{args[0].__name__}[{len(args)}]"
    else:
        name = inner.__name__
    return f"{name} | None" if optional else name


def _coerce_scalar(name: str, kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a string, got {value!r}")


def coerce(name: str, kind: Any, value: Any) -> Any:
    """``value`` as type ``kind`` (bool, int, float, str, a fixed tuple of them, or ``X | None``);
    ValueError naming ``name`` otherwise."""
    inner, optional = _optional(kind)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} must be given, got None")
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{name} must be a list of {len(args)} {args[0].__name__}s, "
                             f"got {value!r}")
        return tuple(_coerce_scalar(name, a, v) for a, v in zip(args, value))
    return _coerce_scalar(name, inner, value)


def check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    """ValueError naming ``name`` when ``value`` (each element of a tuple) is out of range."""
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ValueError(f"{name} must be one of {list(meta['choices'])}, got {value!r}")
    for item in value if isinstance(value, tuple) else (value,):
        for key, ok, text in _BOUNDS:
            bound = meta.get(key)
            if bound is not None and not ok(item, bound):
                each = " each" if isinstance(value, tuple) else ""
                raise ValueError(f"{name} must{each} be {text} {bound}, got {_shown(value)}")


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def range_text(meta: Mapping[str, Any]) -> str:
    """A parameter's allowed values as listings show them: ``>= 1``, ``> 0, < 1``, ``one of [...]``."""
    if meta.get("choices") is not None:
        return f"one of {list(meta['choices'])}"
    return ", ".join(f"{text} {meta[key]}" for key, _, text in _BOUNDS if meta.get(key) is not None)


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as ``restora methods`` and ``restora tasks`` list it."""

    name: str
    type: str
    default: Any
    help: str
    range: str = ""


def param_info(params: type) -> list[ParamInfo]:
    """The parameters of dataclass ``params`` with their types, defaults, meaning and range."""
    hints = typing.get_type_hints(params)
    return [ParamInfo(f.name, type_name(hints[f.name]), _shown(f.default),
                      f.metadata.get("help", ""), range_text(f.metadata))
            for f in dataclasses.fields(params)]


def defaults_of(params: type) -> dict[str, Any]:
    """The field defaults of dataclass ``params``."""
    return {f.name: f.default for f in dataclasses.fields(params)}


def build_params(params: type, values: Mapping[str, Any], overrides: Mapping[str, Any] | None,
                 owner: str) -> Any:
    """An instance of ``params`` from ``values`` updated with ``overrides`` (None = not given).

    Raises ValueError naming the parameter for an unknown name (``owner`` says whose, e.g.
    "method 'ot_ode'"), a wrong type or a value out of range.
    """
    fields = {f.name: f for f in dataclasses.fields(params)}
    hints = typing.get_type_hints(params)
    merged = dict(values)
    for name, value in (overrides or {}).items():
        if name not in fields:
            raise ValueError(f"{owner} has no parameter '{name}'; it takes {list(fields)}")
        if value is not None:
            merged[name] = value
    checked = {}
    for name, value in merged.items():
        value = coerce(name, hints[name], value)
        check_range(name, value, fields[name].metadata)
        checked[name] = value
    return params(**checked)


def as_dict(params: Any) -> dict[str, Any]:
    """A parameter dataclass as a plain dict of JSON values (tuples as lists)."""
    return {k: _shown(v) for k, v in dataclasses.asdict(params).items()}
