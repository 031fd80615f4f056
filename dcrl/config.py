"""Typed configuration: dataclasses filled from YAML plus `key.sub=value` overrides, validated.

Every default lives in one place — the dataclass field — and its help text in the field's
`metadata["help"]`. Loading checks every key and value against the dataclass types, so a typo or a
bad value fails at start-up with the key's full dotted path and what is allowed, never as a
`KeyError` twenty minutes into a run.

>>> from dataclasses import dataclass
>>> @dataclass
... class Opt:
...     lr: float = 1e-6
>>> build(Opt, {"lr": "3e-4"}).lr
0.0003
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from dcrl.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A configuration key or value is invalid; the message names the key and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a numeric setting: `build` checks them, the help text states them."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        """'≥ 1', '> 0 and ≤ 1', ..."""
        parts = [
            f"{sign} {_number(bound)}"
            for sign, bound in (("≥", self.ge), (">", self.gt), ("≤", self.le), ("<", self.lt))
            if bound is not None
        ]
        return " and ".join(parts)


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e16:
        return f"{int(value):,}".replace(",", "_") if abs(value) >= 100_000 else str(int(value))
    return f"{value:g}"


def field(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with help text (shown by `--print-config` and the docs) and, for a
    number, its allowed range (`ge`/`gt`/`le`/`lt`): `build` refuses a value outside it, naming
    the key, and the help text ends with "Allowed: ..." so the range is stated where it is set.
    """
    metadata: dict[str, Any] = {"help": help}
    if any(bound is not None for bound in (ge, gt, le, lt)):
        bounds = Range(ge=ge, gt=gt, le=le, lt=lt)
        metadata["range"] = bounds
        nullable = default is None
        metadata["help"] = f"{help} Allowed: {bounds.describe()}{' (or null)' if nullable else ''}."
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    if isinstance(default, list | dict) or dataclasses.is_dataclass(default):
        import copy

        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` to type `tp`, or raise ConfigError naming `key`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, prefix=key)
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: cannot read a {_describe(tp)} from {value!r}")


def build(cls: type[T], data: dict[str, Any] | None, *, prefix: str = "") -> T:
    """Construct dataclass `cls` from a (nested) mapping, validating every key and value.

    Raises:
        ConfigError: an unknown key (the message lists the known ones) or a value of the wrong
            type or outside its allowed set (the message names the dotted key).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}; known keys{' under ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
        bounds = fields[name].metadata.get("range")
        if bounds is not None and kwargs[name] is not None and not bounds.contains(kwargs[name]):
            raise ConfigError(
                f"{key} must be {bounds.describe()}, got {_number(kwargs[name])}: "
                f"{fields[name].metadata['help']}"
            )
    try:
        obj = cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except (ValueError, TypeError) as err:  # the message starts with the field's name
            raise ConfigError(f"{prefix + '.' if prefix else ''}{err}") from None
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (["a", "b", "c"], value), the value parsed as YAML (`3e-4`, `true`)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested mapping `data` with each `key.sub=value` override applied."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys given here override the merged ones, as YAML says
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(
                    f"{key_node.start_mark.name}:{line}: key {key!r} is given twice in one "
                    f"mapping (lines {first_line[key]} and {line}), and only one would count: "
                    "keep one of them"
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file (and the line, where YAML knows it).

    Raises:
        ConfigError: a missing file, invalid YAML, a key given twice, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: not valid YAML ({err.problem or err.context}); fix the file"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def check_device(name: str) -> None:
    """Raise a ValueError unless `name` is "auto" or a device this torch build can use."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"device={name!r} is not a device name torch knows: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name!r}, but this torch ({torch.__version__}) sees no CUDA GPU: use "
                "device=cpu (or auto), or install a CUDA build of torch on a GPU machine"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={name!r}, but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible: use cuda:0 … or auto"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r}, but MPS is not available here: use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r}: dcrl trains on cpu, cuda or mps; use one of those")


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists (for YAML/JSON output)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
