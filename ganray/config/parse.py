"""Reading one config value: YAML (or --set) value to its annotated type, range and choice checks,
and the error type that names the dotted path of every offending key. ganray.config builds its
sections with these; this module imports only ganray.exits."""
from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Any

from ganray.exits import BadInput

MAX_INT = 2**31 - 1  # no integer setting is meaningful beyond this (train.steps has its own cap)


class ConfigError(BadInput, ValueError):
    """A config problem, with the dotted path of every offending key."""

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def convert(value: Any, tp, path: str) -> Any:
    """Convert a YAML (or --set) value to the annotated type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # `float | None`: None = unset
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return convert(value, inner, path)
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.strip("[]()").split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list of {_type_name(elem)}, got {value!r}")
        return tuple(convert(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    f = float(value)  # "1e6" (YAML 1.1 reads it as a string)
                except ValueError:
                    f = math.nan
                if math.isfinite(f) and f.is_integer():
                    return int(f)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            if isinstance(value, (int, float, str)):
                return float(value)  # YAML 1.1 reads 2e-4 as a string
        except (ValueError, OverflowError):
            pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp} at {path}")


def check_range(value: Any, meta: dict, path: str) -> list[str]:
    values = value if isinstance(value, tuple) else (value,)
    errs = []
    for v in values:
        if v is None:  # unset: filled in later (the family's settings)
            continue
        if isinstance(v, float) and not math.isfinite(v):
            errs.append(f"{path}: must be a finite number (got {v!r})")
            continue
        if isinstance(v, int) and not isinstance(v, bool) and meta.get("le") is None and abs(v) > MAX_INT:
            errs.append(f"{path}: must be <= {MAX_INT} (got {v!r})")
            continue
        if meta.get("choices") is not None and v not in meta["choices"]:
            errs.append(f"{path}: unknown value {v!r}; allowed: {', '.join(map(str, meta['choices']))}")
        if meta.get("ge") is not None and v < meta["ge"]:
            errs.append(f"{path}: must be >= {meta['ge']} (got {v!r})")
        if meta.get("gt") is not None and v <= meta["gt"]:
            errs.append(f"{path}: must be > {meta['gt']} (got {v!r})")
        if meta.get("le") is not None and v > meta["le"]:
            errs.append(f"{path}: must be <= {meta['le']} (got {v!r})")
    return errs


def did_you_mean(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
