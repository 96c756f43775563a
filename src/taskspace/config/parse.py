"""Typed, nested configs from the command line, through OmegaConf structured configs.

A command's config is a dataclass whose fields may be dataclasses themselves (``data``,
``model``, ``recipe``, ``launch``, ...). The command line is a list of tokens:

- ``key=value`` with dotted keys (``recipe.lr=1e-3``, ``model.kwargs={widths: [64]}``);
  values are YAML-like scalars, lists and mappings, checked against the field's type;
- ``group=name`` for a group whose dataclass marks a *selector* field (``model=mlp`` means
  ``model.name=mlp``, ``recipe=reference`` means ``recipe.preset=reference``);
- a ``.yaml`` / ``.yml`` file of (nested) overrides; later tokens win.

OmegaConf does the parsing, merging and type checking; this module turns its errors into
one :class:`TaskspaceError` line, maps old flat keys to a line naming the new key, and
accepts ``a,b`` for a list field as it always did.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from taskspace.errors import TaskspaceError

C = TypeVar("C")

__all__ = [
    "apply_overrides",
    "build_config",
    "describe",
    "flatten",
    "leaf_fields",
    "load_config",
    "option",
    "to_dict",
]


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    selector: str | None = None,
    choices: dict[str, type] | None = None,
) -> Any:
    """A dataclass field with a help line (shown by ``--help``).

    ``factory`` makes a mutable default; ``selector`` (on a nested-dataclass field) names
    the sub-field that ``group=value`` sets. ``choices`` makes it a *method group*: each
    selector value brings its own dataclass (a subclass of the field's type) with its own
    options, e.g. ``method=jtt`` then accepts ``method.lambda_up=50``.
    """
    meta: dict[str, Any] = {"help": help}
    if selector is not None:
        meta["selector"] = selector
    if choices is not None:
        meta["choices"] = dict(choices)
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nested_type(tp: Any) -> type | None:
    """The dataclass of a field type (``X`` or ``X | None``), if it is one."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
    return None


def _is_list(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return True
    return any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(tp))


def leaf_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """``(dotted key, type, field)`` of every non-dataclass field, depth first."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub = _nested_type(tp)
        if sub is None:
            yield f"{prefix}{f.name}", tp, f
            continue
        seen: set[str] = set()
        for variant in [sub, *f.metadata.get("choices", {}).values()]:
            for leaf in leaf_fields(variant, f"{prefix}{f.name}."):
                if leaf[0] not in seen:  # a method group: the union of its methods' options
                    seen.add(leaf[0])
                    yield leaf


def _selectors(cls: type, prefix: str = "") -> dict[str, str]:
    """``{group key: selector key}``, e.g. ``{"model": "model.name"}``."""
    out: dict[str, str] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        sub = _nested_type(hints[f.name])
        if sub is None:
            continue
        key = f"{prefix}{f.name}"
        sel = f.metadata.get("selector")
        if sel:
            out[key] = f"{key}.{sel}"
        out.update(_selectors(sub, key + "."))
    return out


def _renamed(cls: type) -> dict[str, str]:
    return dict(getattr(cls, "RENAMED", {}) or {})


def _canonical_key(cls: type, key: str, value: str, leaves: dict[str, Any]) -> str:
    """Map ``group=value`` to its selector and refuse old keys with the new name."""
    sels = _selectors(cls)
    if key in sels and not value.lstrip().startswith("{"):
        return sels[key]
    if key in leaves or any(k.startswith(key + ".") for k in leaves):
        return key
    renamed = _renamed(cls)
    if key in renamed:
        raise TaskspaceError(
            f"option {key!r} is now {renamed[key]!r} (e.g. {renamed[key]}={value})"
        )
    close = difflib.get_close_matches(key, list(leaves), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise TaskspaceError(f"unknown option {key!r}{hint}; --help lists the options")


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _token_overrides(cls: type, tokens: Sequence[str]) -> list[DictConfig]:
    """Each token as an OmegaConf config of dotted overrides, in order."""
    leaves = {k: tp for k, tp, _ in leaf_fields(cls)}
    out: list[DictConfig] = []
    for tok in tokens:
        if tok.endswith((".yaml", ".yml")) and "=" not in tok:
            out.append(_yaml_file(cls, Path(tok), leaves))
            continue
        if "=" not in tok:
            raise TaskspaceError(f"expected key=value or a .yaml file, got {tok!r}")
        key, raw = tok.split("=", 1)
        key = _canonical_key(cls, key.strip(), raw, leaves)
        tp = leaves.get(key)
        if tp is not None and _is_list(tp) and "," in raw and not raw.lstrip().startswith("["):
            raw = "[" + raw + "]"  # targets=0,11 as before
        try:
            out.append(OmegaConf.from_dotlist([f"{key}={raw}"]))
        except OmegaConfBaseException as err:
            raise TaskspaceError(f"cannot parse {tok!r}: {_one_line(err)}") from None
    return out


def _yaml_file(cls: type, path: Path, leaves: dict[str, Any]) -> DictConfig:
    if not path.is_file():
        raise TaskspaceError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TaskspaceError(f"config file {path} is not valid YAML: {_one_line(err)}") from None
    if not isinstance(data, dict):
        raise TaskspaceError(f"config file {path} must hold a mapping of key: value")
    flat = flatten_mapping(data)
    dotted = []
    for key, value in flat.items():
        key = _canonical_key(cls, key, "" if isinstance(value, dict) else str(value), leaves)
        dotted.append((key, value))
    cfg = OmegaConf.create({})
    for key, value in dotted:
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def flatten_mapping(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{dotted key: value}`` (free-form dict leaves stay whole when
    their keys are not options, which :func:`_canonical_key` then decides)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out.update({key: v} if _looks_free_form(key) else flatten_mapping(v, key + "."))
        else:
            out[key] = v
    return out


def _looks_free_form(key: str) -> bool:
    return key.endswith("kwargs")


def _choose_methods(cls: type, base: DictConfig, overrides: Sequence[DictConfig]) -> None:
    """Give each method group of ``cls`` the dataclass of the method the overrides select."""
    hints = _hints(cls)
    chosen = OmegaConf.merge(*overrides) if overrides else OmegaConf.create({})
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if not choices:
            continue
        sel = f.metadata["selector"]
        value = OmegaConf.select(chosen, f"{f.name}.{sel}", default=None)
        if value is None:
            continue
        if value not in choices:
            raise TaskspaceError(
                f"unknown {f.name} {value!r}; choose one of {', '.join(sorted(choices))}"
            )
        if not issubclass(choices[value], _nested_type(hints[f.name]) or object):
            raise TypeError(f"{choices[value]} must subclass the type of {f.name}")
        base[f.name] = OmegaConf.structured(choices[value])


def _merge(cls: type[C], base: Any, overrides: Sequence[DictConfig]) -> C:
    try:
        _choose_methods(cls, base, overrides)
        merged = OmegaConf.merge(base, *overrides)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise TaskspaceError(_explain(err)) from None
    return typing.cast(C, obj)


_KINDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def _explain(err: OmegaConfBaseException) -> str:
    """One line for an OmegaConf error: ``pairs must be an integer, got 'two'``."""
    key = getattr(err, "full_key", None) or "option"
    line = _one_line(err)
    for kind, words in _KINDS.items():
        if f"could not be converted to {kind}" in line:
            got = getattr(err, "value", None)
            return f"{key} must be {words}, got {got!r}"
    return f"bad value for {key}: {line}"


def build_config(cls: type[C], tokens: Sequence[str]) -> C:
    """Instantiate dataclass ``cls`` from command-line ``tokens``."""
    return _merge(cls, OmegaConf.structured(cls), _token_overrides(cls, tokens))


def apply_overrides(cfg: C, overrides: dict[str, Any]) -> C:
    """A copy of ``cfg`` with ``overrides`` (dotted keys or nested mappings) applied."""
    cls = type(cfg)
    leaves = {k: tp for k, tp, _ in leaf_fields(cls)}
    patch = OmegaConf.create({})
    for key, value in flatten_mapping(dict(overrides)).items():
        key = _canonical_key(cls, key, "" if isinstance(value, dict) else str(value), leaves)
        OmegaConf.update(patch, key, value, force_add=True)
    return _merge(cls, OmegaConf.structured(cfg), [patch])


def load_config(cls: type[C], path: str | Path) -> C:
    """The config stored in a run directory's ``config.yaml`` (a nested mapping)."""
    path = Path(path)
    if not path.is_file():
        raise TaskspaceError(f"no config file {path}")
    data = yaml.safe_load(path.read_text()) or {}
    renamed = _renamed(cls)
    flat = flatten_mapping(data)
    # a run directory made before the options were nested: read its flat keys as the new ones
    flat = {renamed.get(k, k): v for k, v in flat.items() if renamed.get(k, k) is not None}
    return apply_overrides(cls(), flat)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a (nested) dataclass, YAML-serialisable."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """``{dotted key: value}`` of every leaf option of a config instance."""
    out: dict[str, Any] = {}

    def walk(v: Any, prefix: str) -> None:
        for f in dataclasses.fields(v):
            x = getattr(v, f.name)
            if dataclasses.is_dataclass(x) and not isinstance(x, type):
                walk(x, f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = to_dict(x)

    walk(cfg, "")
    return out


def describe(cls: type) -> str:
    """One line per option for ``--help``: ``key=default  help``, nested keys dotted."""
    values = flatten(cls())
    lines = []
    sels = {v: k for k, v in _selectors(cls).items()}
    for key, _, f in leaf_fields(cls):
        doc = f.metadata.get("help", "")
        short = f"  (or {sels[key]}=...)" if key in sels else ""
        default = repr(values[key]) if key in values else "(method option)"
        lines.append(f"  {key}={default}  {doc}{short}".rstrip())
    return "\n".join(lines)
