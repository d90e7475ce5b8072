"""Reading ``params.yaml``: strict building of the sections, then the cross-field checks.

Loading is strict: an unknown key, a missing key or a value of the wrong type stops the run at
start with a :class:`ConfigError` that names the file and the dotted key. A file written before
the sections took their stages' names fails, naming the new name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from distilflow.config.checks import check
from distilflow.config.sections import ConfigError, Params

DEFAULT_PARAMS = Path("params.yaml")
RENAMED_SECTIONS = {"teacher": "label", "registry": "register"}  # old name -> the stage's name

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert_union(value: Any, args: tuple[Any, ...], key: str, source: Path) -> Any:
    """``value`` as the first member of a union that accepts it (``None`` for an optional)."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _convert(value, arg, key, source)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0])


def _convert_scalar(value: Any, tp: Any, key: str, source: Path) -> Any:
    """Check a plain value against a class (an int is accepted, as a float, for a float)."""
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: {key}: expected {tp.__name__}, got bool {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(
            f"{source}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _convert(value: Any, tp: Any, key: str, source: Path) -> Any:
    """Check ``value`` against the annotation ``tp``, building nested dataclasses."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, args, key, source)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {allowed}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)  # type: ignore[arg-type]
    return _convert_scalar(value, tp, key, source)


def _build(cls: type[T], data: Any, key: str, source: Path) -> T:
    """Build dataclass ``cls`` from a mapping, strictly."""
    where = key or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = ", ".join(f"{key}.{u}" if key else u for u in unknown)
        raise ConfigError(f"{source}: unknown key {dotted}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        dotted = f"{key}.{name}" if key else name
        if name not in data:
            has_default = f.default is not dataclasses.MISSING
            if has_default or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"{source}: missing key {dotted}")
        kwargs[name] = _convert(data[name], hints[name], dotted, source)
    return cls(**kwargs)


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate ``params.yaml``."""
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    raw = raw if raw is not None else {}
    _refuse_renamed(raw, source)
    params = _build(Params, raw, "", source)
    check(params, source)
    return params


def build_params(raw: Any, source: Path | str = "params") -> Params:
    """``Params`` from an already-read mapping (e.g. a results record's), strictly, defaults
    filled in, without the checks that look at files on disk."""
    _refuse_renamed(raw, Path(source))
    return _build(Params, raw, "", Path(source))


def _refuse_renamed(raw: Any, source: Path) -> None:
    """A params file written before the sections took their stages' names fails, saying how."""
    if not isinstance(raw, dict):
        return
    for old, new in RENAMED_SECTIONS.items():
        if old in raw:
            raise ConfigError(
                f"{source}: section {old!r} is now {new!r} (named as its stage is in dvc.yaml, "
                f"flows/ and tasks/): rename {old}: to {new}:"
            )
