"""``python -m snnbench.bench``, the command users type; its code is
:mod:`snnbench.benchmarks.engine`."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("snnbench.benchmarks.engine", run_name="__main__", alter_sys=True)
else:  # ``import snnbench.bench`` is the module itself
    from snnbench.benchmarks import engine

    sys.modules[__name__] = engine
