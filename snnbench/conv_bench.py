"""``python -m snnbench.conv_bench``, the command users type; its code is
:mod:`snnbench.benchmarks.conv`."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("snnbench.benchmarks.conv", run_name="__main__", alter_sys=True)
else:  # ``import snnbench.conv_bench`` is the module itself
    from snnbench.benchmarks import conv

    sys.modules[__name__] = conv
