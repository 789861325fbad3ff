"""snnbench's Hydra sweeper, ``hydra/sweeper=snnbench`` (the default in conf/config.yaml):
``hydra.sweeper.search=grid`` runs :class:`~.grid.GridSweeper`, ``search=optuna``
(set by ``hparams_search=optuna``) :class:`~.optuna_sweeper.OptunaSweeper`."""
