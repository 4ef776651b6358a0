"""Frozen dataclasses from JSON-like dicts (recipes, data configs saved beside a model)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def json_tuples(value: Any) -> Any:
    """JSON lists -> tuples, recursively (the frozen configs hold tuples)."""
    return tuple(json_tuples(v) for v in value) if isinstance(value, list) else value


def dataclass_from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """`cls(**data)` with lists turned into tuples and unknown keys named in the error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
    return cls(**{k: json_tuples(v) for k, v in data.items()})
