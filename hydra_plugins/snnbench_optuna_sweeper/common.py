"""Helpers shared by the grid and the Optuna sweeper."""

from __future__ import annotations

import sys

from hydra.core.utils import JobReturn


def die(message: str, code: int) -> None:
    """End the sweep with one line on stderr (no traceback) and ``code``."""
    sys.stdout.flush()
    print(f"snnbench: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def output_dir(ret: JobReturn | None) -> str | None:
    """The run dir of a finished job, or None."""
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)  # type: ignore[union-attr]
    except Exception:
        return None
