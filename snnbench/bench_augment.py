"""``python -m snnbench.bench_augment``, the command users type; its code is
:mod:`snnbench.benchmarks.augment`."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("snnbench.benchmarks.augment", run_name="__main__", alter_sys=True)
else:  # ``import snnbench.bench_augment`` is the module itself
    from snnbench.benchmarks import augment

    sys.modules[__name__] = augment
