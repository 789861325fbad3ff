"""Dotted ``_target_`` paths: the object one names, and the one-line reason when it
cannot be imported or built (for models and datasets alike)."""

from __future__ import annotations

import importlib
from typing import Any


def _one_line(exc: BaseException) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None:  # Hydra wraps the constructor's own error
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _locate(path: str) -> Any:
    """The object at a dotted import path (``pkg.module.Class``); raises ImportError or
    AttributeError naming what is missing (an import error inside the module is its own)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module.startswith(exc.name) and i > 1:
                continue  # a shorter prefix may be the module, the rest attributes
            raise
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise AttributeError(f"{'.'.join(parts[:i])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"nothing importable at {path!r}")
