"""``python -m snnbench.study``, the command users type; its code is
:mod:`snnbench.studies.runner`."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("snnbench.studies.runner", run_name="__main__", alter_sys=True)
else:  # ``import snnbench.study`` is the module itself
    from snnbench.studies import runner

    sys.modules[__name__] = runner
