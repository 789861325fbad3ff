"""Sweeps: everything of snnbench's Hydra sweeper that runs without Hydra, by concern.

- :mod:`~snnbench.sweeps.settings` the sweeper's keys and defaults (``hydra.sweeper.*``)
- :mod:`~snnbench.sweeps.space` the search space in Hydra's override grammar
- :mod:`~snnbench.sweeps.storage` storage specs, password redaction, opening a storage
- :mod:`~snnbench.sweeps.samplers` samplers and pruners
- :mod:`~snnbench.sweeps.study` what defines a study; retries of lost trials
- :mod:`~snnbench.sweeps.job` the job side of a trial: heartbeat, reports, pruning
- :mod:`~snnbench.sweeps.workers` which process runs a trial; same-host liveness
- :mod:`~snnbench.sweeps.tables` ``summary.csv``, ``trials.csv``, ``optimization_results.yaml``
- :mod:`~snnbench.sweeps.names` file names and trial attribute names

The Hydra sweepers live in ``hydra_plugins.snnbench_optuna_sweeper``. Heavy imports
(optuna) happen inside functions: Hydra imports the plugin package at every start.
"""
