"""The study as one resumable command (``python -m snnbench.study``): the plan declared in YAML
(``plan``), the runner that runs its items and searches into fixed folders (``runner``), and
where an item runs, a local process or a SLURM job (``executors``). The report is the analysis's
own command (``analysis.study``)."""
