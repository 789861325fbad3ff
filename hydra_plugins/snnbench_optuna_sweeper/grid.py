"""``hydra.sweeper.search=grid``: every combination; failures never stop the sweep."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.snnbench_optuna_sweeper.common import die, output_dir

log = logging.getLogger(__name__)


class GridSweeper(BasicSweeper):
    """Hydra's grid sweeper, but a failing job never stops the sweep; ``summary.csv``.

    All jobs run (batch after batch, ``max_batch_size`` as in Hydra's basic sweeper);
    ``<sweep dir>/summary.csv`` is rewritten after each batch with one row per job
    (overrides, status, metrics, run dir, error). If any job failed the sweep then ends
    with a one-line message naming them and exit code 1.
    """

    def sweep(self, arguments: list[str]) -> Any:
        from snnbench.sweeps.names import SUMMARY_FILE
        from snnbench.sweeps.tables import summary_row, write_summary

        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(
            parser.parse_overrides(params_conf), self.max_batch_size
        )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        rows: list[dict[str, Any]] = []
        job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            try:
                results: Sequence[JobReturn | None] = self.launcher.launch(
                    batch, initial_job_idx=job_idx
                )
                lost: BaseException | None = None
            except Exception as exc:  # the launcher lost the batch (e.g. a worker died)
                results, lost = [None] * len(batch), exc
            for i, (overrides, ret) in enumerate(zip(batch, results)):
                exc = lost
                if ret is not None and ret.status != JobStatus.COMPLETED:
                    exc = ret._return_value
                rows.append(summary_row(job_idx + i, list(overrides), output_dir(ret), exc))
            write_summary(sweep_dir / SUMMARY_FILE, rows)
            job_idx += len(batch)
            returns.append([r for r in results if r is not None])

        failed = [r for r in rows if r["status"] != "completed"]
        log.info(
            "%d jobs: %d completed, %d failed; summary: %s",
            len(rows),
            len(rows) - len(failed),
            len(failed),
            sweep_dir / SUMMARY_FILE,
        )
        if failed:
            first = failed[0]
            die(
                f"{len(failed)} of {len(rows)} jobs failed (first: job {first['job']} "
                f"[{first['overrides']}]: {first['error']}); all jobs ran, see "
                f"{sweep_dir / SUMMARY_FILE}",
                1,
            )
        return returns
