"""Typed configurations: one dataclass per component, checked the same way by every door.

Every component's settings are a dataclass whose fields carry their type (``Literal``
for a closed set of choices) and default. :func:`check_fields` validates an instance in
its ``__post_init__`` (choices, numeric bounds declared in the field's metadata) and
:func:`from_mapping` builds one from a plain mapping, refusing an unknown key with one
error naming the closest valid key. The doors (the command line, the estimator) take
their options, names and defaults from these dataclasses (:func:`option_defaults`).

Errors are :class:`ConfigError` (a ``ValueError``); a door that shows options under
other names (``--epochs``) passes ``style`` so the message names the option to fix.
This module imports nothing from the rest of the package.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Literal, TypeVar, get_args, get_origin

__all__ = [
    "ConfigError",
    "bounded",
    "check_fields",
    "closest",
    "from_mapping",
    "literal_choices",
    "option_defaults",
    "stands_for",
    "unknown_key_error",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting with a value or name no component accepts (one line, names the setting).

    ``unknown``: for an unknown option name, ``(the name, the closest valid name or None)``,
    for a door to name the option its own way."""

    def __init__(self, message: str, unknown: tuple[str, str | None] | None = None) -> None:
        super().__init__(message)
        self.unknown = unknown


class SettingWarning(UserWarning):
    """A setting that has no effect on this run (one line: the setting, as the door writes
    it, and why); the command line prints it as a ``warning:`` line."""


def cli_style(name: str) -> str:
    """``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


def plain_style(name: str) -> str:
    return name


#: How settings are named in error messages; the command line swaps in :func:`cli_style`.
_STYLE: list[Callable[[str], str]] = [plain_style]


class option_style:
    """Context manager naming settings the door's way in every error raised inside it."""

    def __init__(self, style: Callable[[str], str]) -> None:
        self.style = style

    def __enter__(self) -> None:
        _STYLE.append(self.style)

    def __exit__(self, *exc: Any) -> None:
        _STYLE.pop()


def _name(key: str) -> str:
    return _STYLE[-1](key)


def _setting(key: str, value: Any) -> str:
    """``key`` set to ``value`` as the door writes it: ``stage2='reinit'``, or ``--stage2
    reinit`` on the command line (a boolean as its flag: ``--flip``, ``--no-flip``)."""
    if _STYLE[-1] is not cli_style:
        return f"{key}={value!r}"
    if isinstance(value, bool):
        return cli_style(key) if value else "--no-" + key.replace("_", "-")
    return f"{cli_style(key)} {value}"


def warn_moot(settings: Any, moot: dict[str, tuple[str, str]], stacklevel: int = 2) -> None:
    """One :class:`SettingWarning` for each setting of ``moot`` (``{key: (when, why)}``: the
    settings that change nothing with the others, :func:`kdcrowd.framework.moot_settings`,
    :func:`kdcrowd.methods.moot_training_settings`) that ``settings`` gives another value than
    its default (a dataclass field's default is its class attribute; the estimator cannot
    tell a value typed at its default from the default, so the default says nothing):
    ``"{setting} has no effect {when}: {why}"``, in the door's words. A warning, not an
    error, so that a run started with one resumes."""
    import warnings

    for key, (when, why) in moot.items():
        value = getattr(settings, key)
        if value != getattr(type(settings), key):
            warnings.warn(f"{_setting(key, value)} has no effect {when}: {why}", SettingWarning, stacklevel=stacklevel + 1)


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None, **kw: Any) -> Any:
    """A dataclass field with numeric bounds that :func:`check_fields` enforces."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt}, **kw)


def closest(key: str, valid: Iterable[str]) -> str | None:
    """The valid key most like ``key`` (``None`` when none is close)."""
    valid = list(valid)
    m = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if m:
        return m[0]
    # a short key that is one word of a valid one (``f`` → ``mig_f``)
    parts = [v for v in valid if key.lower() in v.lower().replace("-", "_").split("_")]
    return parts[0] if len(parts) == 1 else None


def unknown_key_error(key: str, valid: Iterable[str], what: str) -> ConfigError:
    valid = sorted(valid)
    near = closest(key, valid)
    hint = f"did you mean {_name(near)!r}?" if near else f"valid: {', '.join(_name(v) for v in valid)}"
    return ConfigError(f"unknown {what} option {_name(key)!r}; {hint}")


def literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The choices of a ``Literal`` type (also inside ``Optional`` / a union), else ``None``."""
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        out: list[Any] = []
        for a in get_args(tp):
            c = literal_choices(a)
            if c:
                out += c
        return tuple(out) or None
    return None


def _hints(cls: type) -> dict[str, Any]:
    import sys

    return typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _type_ok(v: Any, tp: Any) -> bool | None:
    """Whether ``v`` is of the type hint ``tp`` for the plain types (``bool``, ``int``,
    ``float``, ``str``, ``None``, numeric ``Literal`` values and unions of them); ``None`` where the
    hint is another type (a module, a mapping ...): not judged here. A bool is no number
    (``stages=True`` is not 1), an int is a float; what :func:`_plain_value` turns into the
    type passes too (0/1 for a bool, 16.0 for an int, a path or a torch device for text)."""
    if tp is Any:
        return True
    if tp is type(None):
        return v is None
    if tp in (bool, int, float, str):
        return _plain_value(v, tp) is not _NOT
    origin = get_origin(tp)
    if origin is Literal:
        return any(v == a and isinstance(v, bool) == isinstance(a, bool) and isinstance(v, str) == isinstance(a, str) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        verdicts = [_type_ok(v, a) for a in get_args(tp)]
        return True if any(verdicts) else None if None in verdicts else False
    return None


_NOT = object()


def _is_bool(v: Any) -> bool:
    """A bool or numpy's bool (no Integral; its type is named ``bool`` in numpy 2, ``bool_`` before)."""
    return isinstance(v, bool) or (type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_"))


def _plain_value(v: Any, tp: type) -> Any:
    """``v`` as a value of ``tp`` (``bool``, ``int``, ``float`` or ``str``) where it stands
    for one exactly, else :data:`_NOT`: a bool or numpy bool, or the integers 0 and 1 (JSON's
    ``--model-option learn_prior=0``) for a bool; an integral number, or a whole float
    (JSON's ``embed_dim=16.0``), for an int; a real number that is no bool for a float (a
    numpy scalar as a Python float, a Python int kept); a string, a path or a
    ``torch.device`` for text."""
    is_bool = _is_bool(v)
    if tp is bool:
        return bool(v) if is_bool or (isinstance(v, numbers.Integral) and v in (0, 1)) else _NOT
    if tp is int:
        if is_bool:
            return _NOT
        if isinstance(v, numbers.Integral):
            return int(v)
        return int(v) if isinstance(v, numbers.Real) and math.isfinite(v) and float(v).is_integer() else _NOT
    if tp is float:
        if is_bool or not isinstance(v, numbers.Real):
            return _NOT
        return v if type(v) in (int, float) else float(v)  # numpy's float32 as a float: the bounds below see it
    if isinstance(v, str):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v) if type(v).__module__ == "torch" and type(v).__name__ == "device" else _NOT


def stands_for(v: Any, tp: type) -> bool:
    """Whether ``v`` is taken as a value of ``tp`` (``bool``, ``int``, ``float`` or ``str``),
    as the configurations take it: for a bool, a bool, numpy's or 0/1 (:func:`_plain_value`)."""
    return _plain_value(v, tp) is not _NOT


def _plain_hint(tp: Any) -> type | None:
    """``bool``, ``int``, ``float`` or ``str`` where ``tp`` is that type or ``Optional`` of
    it (the hints whose values :func:`check_fields` stores as that type), else ``None``."""
    if tp in (bool, int, float, str):
        return tp  # type: ignore[no-any-return]
    if get_origin(tp) in (typing.Union, types.UnionType):
        arms = [x for x in get_args(tp) if x is not type(None)]
        if len(arms) == 1 and arms[0] in (bool, int, float, str):
            return arms[0]  # type: ignore[no-any-return]
    return None


def _kind(tp: Any) -> str:
    """``tp`` in words, for the error on a value of another type."""
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    if get_origin(tp) in (typing.Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_kind(a) for a in arms) + (" (or None)" if len(arms) < len(get_args(tp)) else "")
    return _KINDS.get(tp, getattr(tp, "__name__", str(tp)))


def check_fields(obj: Any) -> None:
    """Validate a config instance: each value's type where the hint is a plain one (bool,
    int, float, str, numeric ``Literal`` values, ``Optional``/unions of them: a string ``"no"`` is
    not false, ``2.5`` epochs is refused at once instead of failing inside the training),
    ``Literal`` choices (strings; other values such as modules pass) and the bounds of
    :func:`bounded` fields."""
    hints = _hints(type(obj))
    for f in fields(obj):
        v = getattr(obj, f.name)
        tp = hints.get(f.name, Any)
        choices = literal_choices(tp)
        plain = _plain_hint(tp)
        if plain is not None and v is not None:  # stored as the type it stands for (16.0 -> 16, a path -> str)
            w = _plain_value(v, plain)
            if w is _NOT:
                raise ConfigError(f"{_name(f.name)} must be {_kind(tp)}; got {v!r}")
            if type(w) is not type(v) or w != v:
                object.__setattr__(obj, f.name, w)
                v = w
        elif not (isinstance(v, str) and choices) and _type_ok(v, tp) is False:  # a string among the choices: the message below
            raise ConfigError(f"{_name(f.name)} must be {_kind(tp)}; got {v!r}")
        if choices and isinstance(v, str) and v not in choices:
            near = closest(v, [c for c in choices if isinstance(c, str)])
            label = f.metadata.get("label") if f.metadata else None
            head = f"{_name(f.name)}: unknown {label} {v!r}; choose one of" if label else f"{_name(f.name)} must be one of"
            raise ConfigError(f"{head} {', '.join(map(str, choices))}" + ("" if label else f"; got {v!r}") + (f" (did you mean {near!r}?)" if near else ""))
        md = f.metadata
        if md and isinstance(v, numbers.Real) and not _is_bool(v):
            if any(md.get(k) is not None for k in ("ge", "gt", "le", "lt")) and not math.isfinite(v):
                raise ConfigError(f"{_name(f.name)} must be a finite number; got {v}")
            for key, ok, word in (("ge", lambda a, b: a >= b, "at least"), ("gt", lambda a, b: a > b, "greater than"), ("le", lambda a, b: a <= b, "at most"), ("lt", lambda a, b: a < b, "less than")):
                bound = md.get(key)  # type: ignore[assignment]
                if bound is not None and not ok(v, bound):
                    raise ConfigError(f"{_name(f.name)} must be {word} {bound}; got {v}")


def from_mapping(cls: type[T], values: Mapping[str, Any], what: str | None = None) -> T:
    """``cls(**values)`` after refusing any key that is not a field of ``cls``."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for k in values:
        if k not in names:
            raise unknown_key_error(k, names, what or cls.__name__)
    return cls(**values)


def option_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass (factories called)."""
    assert is_dataclass(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


@dataclass
class NoOptions:
    """The options of a component that has none."""

    def __post_init__(self) -> None:
        check_fields(self)
