"""Typed configs from the command line: dataclasses + ``key=value`` overrides + YAML files.

Every command's config is a plain dataclass. The command line is a list of tokens; a token
ending in ``.yaml``/``.yml`` is a YAML file of overrides, anything else is ``key=value``.
Values are parsed as YAML scalars (``1e-3``, ``true``, ``[1, 2]``) and then coerced to the
field's declared type, so mistakes are caught before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from taskspace.errors import TaskspaceError

C = TypeVar("C")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Coerce a parsed YAML value to the annotated type ``tp`` (or raise a clear error)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except TaskspaceError as err:
                errors.append(str(err))
        raise TaskspaceError(errors[0] if errors else f"bad value for {name}: {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise TaskspaceError(f"{name} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        items = [_coerce(name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TaskspaceError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TaskspaceError(f"{name} must be an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise TaskspaceError(f"{name} must be an integer, got {value!r}") from None
        if f != int(f):
            raise TaskspaceError(f"{name} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TaskspaceError(f"{name} must be a number, got {value!r}") from None
    if tp is str:
        if value is None:
            raise TaskspaceError(f"{name} must be a string")
        return str(value)
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(cfg: C, overrides: dict[str, Any]) -> C:
    """Return a copy of dataclass ``cfg`` with ``overrides`` applied and type-checked."""
    types_ = _field_types(type(cfg))
    changes = {}
    for key, value in overrides.items():
        if key not in types_:
            raise TaskspaceError(
                f"unknown option {key!r}; valid options: {', '.join(sorted(types_))}"
            )
        changes[key] = _coerce(key, value, types_[key])
    return dataclasses.replace(cfg, **changes)


def parse_tokens(tokens: list[str]) -> dict[str, Any]:
    """``["a=1", "b.yaml", ...]`` -> ``{"a": 1, ...}``; later tokens win."""
    out: dict[str, Any] = {}
    for tok in tokens:
        if tok.endswith((".yaml", ".yml")) and "=" not in tok:
            path = Path(tok)
            if not path.is_file():
                raise TaskspaceError(f"config file not found: {tok}")
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise TaskspaceError(f"config file {tok} is not valid YAML: {err}") from None
            if not isinstance(data, dict):
                raise TaskspaceError(f"config file {tok} must hold a mapping of key: value")
            out.update(data)
            continue
        if "=" not in tok:
            raise TaskspaceError(f"expected key=value or a .yaml file, got {tok!r}")
        key, raw = tok.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def build_config(cls: type[C], tokens: list[str], **defaults: Any) -> C:
    """Instantiate dataclass ``cls`` from command-line ``tokens`` (plus code defaults)."""
    cfg = cls(**defaults)
    return apply_overrides(cfg, parse_tokens(tokens))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-YAML-serialisable dict of a (possibly nested) dataclass."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {k: conv(x) for k, x in dataclasses.asdict(v).items()}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def describe(cls: type) -> str:
    """One line per option (name, type, default) for ``--help``."""
    lines = []
    obj = cls()
    for f in dataclasses.fields(cls):
        doc = (f.metadata or {}).get("help", "")
        lines.append(f"  {f.name}={getattr(obj, f.name)!r}  {doc}".rstrip())
    return "\n".join(lines)
