"""Run records on disk: ``metrics.json`` and checkpoints, always written atomically.

A reader (the analysis package, a sweeper, a user's ``cat``) never sees a half-written
file: each write goes to a temporary file in the same folder, is flushed to disk, then
renamed over the target.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_MODEL_FILE = "best_model.pt"
SCHEMA_VERSION = 1
_PACKAGES = ("snnbench", "torch", "snntorch", "hydra-core", "omegaconf", "numpy", "optuna")


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats (not valid JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    data = json.dumps(_json_safe(obj), indent=2, sort_keys=False).encode() + b"\n"
    _atomic(path, lambda fh: fh.write(data))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    _atomic(path, lambda fh: fh.write(data))


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    _atomic(path, lambda fh: torch.save(obj, fh))


def versions() -> dict[str, str]:
    """Versions of Python and the packages a run depends on."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
