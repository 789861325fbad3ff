"""Module paths from before the package was laid out by concern, and where they live now.

An import of an old path (the ``_target_`` of a user's YAML such as ``snnbench.models.spiking_mlp``
or ``snnbench.conv.ConvSNN``, a pickle, a user's script) returns the module at its new path
itself: one module under two names, so its objects, and patches of them, are the same. The
configs keep their ``_target_`` names (records and checkpoints compare them as strings).
Commands users type (``python -m snnbench.study`` ...) are thin modules at their old paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

#: old module path -> the module's path now
MOVED = {
    "snnbench.neurons": "snnbench.maths.neurons",
    "snnbench.engine": "snnbench.maths.engine",
    "snnbench.lif_cpu": "snnbench.maths.lif_cpu",
    "snnbench.events": "snnbench.maths.events",
    "snnbench.encoding": "snnbench.maths.encoding",
    "snnbench.contract": "snnbench.networks.contract",
    "snnbench.layers": "snnbench.networks.layers",
    "snnbench.models": "snnbench.networks.mlp",
    "snnbench.conv": "snnbench.networks.conv",
    "snnbench.hooks": "snnbench.networks.hooks",
    "snnbench.data": "snnbench.dataio.data",
    "snnbench.datasets": "snnbench.dataio.datasets",
    "snnbench.augment": "snnbench.dataio.augment",
    "snnbench.inputs": "snnbench.dataio.inputs",
    "snnbench.metrics": "snnbench.measure.metrics",
    "snnbench.evaluation": "snnbench.measure.evaluation",
    "snnbench.training": "snnbench.run.training",
    "snnbench.checkpoint": "snnbench.run.checkpoint",
    "snnbench.record": "snnbench.run.record",
    "snnbench.results": "snnbench.run.results",
    "snnbench.optim": "snnbench.run.optim",
    "snnbench.loggers": "snnbench.run.loggers",
    "snnbench.run_folder": "snnbench.run.run_folder",
    "snnbench.exit_codes": "snnbench.run.exit_codes",
    "snnbench.credentials": "snnbench.run.credentials",
    "snnbench.study_plan": "snnbench.studies.plan",
    "snnbench.executors": "snnbench.studies.executors",
    "snnbench.dropout": "snnbench.maths.dropout",
    "snnbench.neuromorphic": "snnbench.dataio.neuromorphic",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new path."""

    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def __init__(self) -> None:
        self._own: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._own[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import machinery stamped the alias's spec on the module: give it its own back
        module.__spec__ = self._own.pop(module.__name__, module.__spec__)


def install() -> None:
    """Serve the old paths (idempotent)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
