"""One training run and what it leaves on disk: the task itself (``training.run``), optimizer and
schedule (``optim``), exact-resume checkpoints (``checkpoint``), the record ``metrics.json``
(``record``, written atomically by ``results``), one writer per run folder (``run_folder``),
experiment trackers (``loggers``), passwords kept out of every file (``credentials``), exit
codes (``exit_codes``) and the NIR export of a run's model (``export``)."""
