"""``python -m snnbench.export``, the command users type; its code is
:mod:`snnbench.run.export`."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("snnbench.run.export", run_name="__main__", alter_sys=True)
else:  # ``import snnbench.export`` is the module itself
    from snnbench.run import export

    sys.modules[__name__] = export
