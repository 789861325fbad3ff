"""Exit codes of ``python -m snnbench``: what a caller (the study runner, a cluster script)
may conclude from how a run stopped.

Only :data:`STALE_CHECKPOINT` proves the run folder's checkpoint unusable; every other
failure says nothing about the folder, so a caller must leave it as it is.
"""

from __future__ import annotations

#: The run finished (or was already finished).
OK = 0
#: The run started and failed (diverged, crashed, killed): its folder holds what it did.
FAILED = 1
#: Bad input (config, data, environment) found before training: nothing was run or written.
BAD_INPUT = 2
#: ``trainer.resume=true`` and the folder's checkpoint was written under another config or
#: version of snnbench (or is not a checkpoint at all): the only case a caller may set it aside.
STALE_CHECKPOINT = 3
