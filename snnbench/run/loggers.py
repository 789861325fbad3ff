"""Experiment trackers (the ``logger`` config group): TensorBoard and MLflow adapters.

Each entry of ``cfg.logger`` with a ``_target_`` is instantiated (Hydra) into an adapter
with ``start(cfg, run_dir)``, ``log_params(params)``, ``log_metrics(metrics, step)``,
``log_final(metrics, params, status)`` and ``close(status)``. :class:`RunLoggers` drives
them for :func:`snnbench.run.training.run`:

- start: the resolved config, flattened (``optimizer.lr``), as params;
- after each epoch: the epoch's metrics (:data:`EPOCH_METRICS`), step = epoch;
- at the end (completed, failed, pruned, interrupted): the run's summary
  (:func:`final_metrics`: ``test_acc``, ``best_val_acc``, spiking metrics, ...) and close.

``metrics.json`` stays the run's record: an adapter that raises (bad tracking URI, server
down, disk full) is reported in one log line and switched off; the run goes on. A missing
package or a bad ``logger.*`` entry is a :class:`ConfigError`, raised before training.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from snnbench.config import ConfigError, flatten
from snnbench.run.credentials import pg_driver, redact, register, reveal

log = logging.getLogger("snnbench")

#: metrics.json history key -> tracker metric name (logged once per epoch, step = epoch).
EPOCH_METRICS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "val_acc": "val/acc",
    "test_acc": "test/acc",
    "lr": "lr",
    "time_s": "time/epoch_s",
    "eval_time_s": "time/eval_s",
}
#: metrics.json top-level keys logged at the end of a run under the same name.
SUMMARY_KEYS = (
    "test_acc",
    "best_val_acc",
    "best_epoch",
    "final_test_acc",
    "epochs_completed",
    "train_time_s",
)
#: keys of metrics.json's ``spiking`` logged at the end as ``spiking/<key>``.
SPIKING_KEYS = (
    "synops_per_sample",
    "acs_per_sample",
    "macs_per_sample",
    "dense_ops_per_sample",
    "neuron_updates_per_sample",
    "energy_per_inference_uj",
    "energy_dense_per_inference_uj",
    "activation_sparsity",
    "connection_sparsity",
    "settle_step_mean",
    "accuracy",
)
#: MLflow run status for each metrics.json status.
MLFLOW_STATUS = {
    "completed": "FINISHED",
    "failed": "FAILED",
    "pruned": "KILLED",
    "interrupted": "KILLED",
}
#: Written into a run dir: which MLflow run it logs to (a resumed run continues it).
MLFLOW_RUN_FILE = "mlflow_run.json"
#: Written into a sweep dir: the sweep's MLflow parent run (found or created under a lock).
MLFLOW_PARENT_FILE = "mlflow_parent.json"
#: Tag that keys a sweep's parent run (the sweep dir's absolute path).
SWEEP_TAG = "snnbench.sweep_dir"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def config_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as flat params, without the ``logger`` group itself."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("logger", None)  # type: ignore[union-attr]
    return flatten(container)  # type: ignore[arg-type]


def epoch_metrics(entry: Mapping[str, Any]) -> dict[str, float]:
    """One metrics.json history entry -> ``{tracker name: value}`` (numbers only)."""
    return {
        name: float(entry[key]) for key, name in EPOCH_METRICS.items() if _is_number(entry.get(key))
    }


def final_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """A run's summary from its record: :data:`SUMMARY_KEYS`, ``spiking/<key>`` and
    ``spiking/<layer>/firing_rate``; keys whose value is missing or null are left out."""
    out = {k: float(record[k]) for k in SUMMARY_KEYS if _is_number(record.get(k))}
    spiking = record.get("spiking") or {}
    for key in SPIKING_KEYS:
        if _is_number(spiking.get(key)):
            out[f"spiking/{key}"] = float(spiking[key])
    for layer in spiking.get("layers") or []:
        if _is_number(layer.get("firing_rate")):
            out[f"spiking/{layer['name']}/firing_rate"] = float(layer["firing_rate"])
    return out


def _require(package: str, extra: str, key: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"{key} needs the {package} package, which is not installed; "
            f'pip install -e ".[{extra}]" (or drop the logger)'
        )


def hydra_context() -> dict[str, Any]:
    """``{"sweep_dir": Path | None, "job": int | None}`` of the current Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not under Hydra (tests, notebooks)
        return {"sweep_dir": None, "job": None}
    if hc.mode != RunMode.MULTIRUN:
        return {"sweep_dir": None, "job": None}
    output = Path(hc.runtime.output_dir).resolve()
    sweep = Path(hc.sweep.dir).resolve()
    if sweep not in output.parents:  # an odd sweep layout: the job dir's parent
        sweep = output.parent
    return {"sweep_dir": sweep, "job": hc.job.get("num")}


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created), held for the ``with`` block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class TensorBoardLogger:
    """Event files in ``log_dir`` (default ``<run dir>/tensorboard``); scalars per epoch,
    the config as text, and at the end the hparams view (config + summary metrics).

    In a sweep every job's dir is under the sweep dir, so
    ``tensorboard --logdir <sweep dir>`` shows the jobs side by side.
    """

    name = "tensorboard"

    def __init__(self, log_dir: str | None = None):
        _require("tensorboard", "tensorboard", "logger.tensorboard")
        self.log_dir = log_dir
        self.writer: Any = None

    def start(self, cfg: DictConfig, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir or Path(run_dir) / "tensorboard"))

    def log_params(self, params: Mapping[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in params.items())
        self.writer.add_text("config", text, 0)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_final(
        self, metrics: Mapping[str, float], params: Mapping[str, Any], status: str, step: int
    ) -> None:
        from torch.utils.tensorboard.summary import hparams

        hp = {k: _hparam_value(v) for k, v in {**params, "status": status}.items()}
        # the hparams plugin reads the metric values from this run's scalars
        exp, ssi, sei = hparams(hp, dict(metrics))
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()


def _hparam_value(v: Any) -> Any:
    """TensorBoard's hparams take numbers, strings and booleans."""
    if isinstance(v, (bool, int, float, str)):
        return v
    return "null" if v is None else json.dumps(v)


class MLflowLogger:
    """One MLflow run per job, through ``MlflowClient``.

    ``tracking_uri``: null = ``sqlite:///<dir>/mlflow.db`` with ``<dir>`` the sweep dir in a
    multirun, else the run dir; or any MLflow URI (``http://host:5000``, ``sqlite:///f.db``).
    In a multirun every job joins one parent run per sweep (tag ``snnbench.sweep_dir``),
    found or created under a file lock in the sweep dir; an Optuna trial's number is the
    tag ``optuna.trial``. A resumed run (``trainer.resume``) continues its MLflow run.
    """

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "snnbench",
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ):
        _require("mlflow", "mlflow", "logger.mlflow")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.client: Any = None
        self.run_id: str | None = None
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self.resumed = False

    # -- setup
    def _uri(self, run_dir: Path, sweep_dir: Path | None) -> str:
        """The real tracking URI (a masked password is looked up in the environment)."""
        if self.tracking_uri:
            return reveal(str(self.tracking_uri))
        return f"sqlite:///{(sweep_dir or run_dir).resolve() / 'mlflow.db'}"

    def _experiment_id(self, uri: str) -> str:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return exp.experiment_id
        artifacts = None
        if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in cwd
            artifacts = (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=artifacts)
        except Exception:  # created meanwhile by another job
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def _parent(self, experiment_id: str, sweep_dir: Path, uri: str) -> str:
        """The sweep's parent run id: found (by tag) or created, under a lock in the sweep dir."""
        with file_lock(sweep_dir / ".mlflow_parent.lock"):
            runs = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_dir}'",
                max_results=1,
            )
            if runs:
                parent = runs[0].info.run_id
            else:
                run = self.client.create_run(
                    experiment_id,
                    run_name=f"sweep {sweep_dir.name}",
                    tags={SWEEP_TAG: str(sweep_dir), "snnbench.role": "sweep"},
                )
                parent = run.info.run_id
            info = {"tracking_uri": register(uri), "run_id": parent, "experiment": experiment_id}
            (sweep_dir / MLFLOW_PARENT_FILE).write_text(json.dumps(info, indent=2) + "\n")
        self.client.update_run(parent, status="RUNNING")
        return parent

    def start(self, cfg: DictConfig, run_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        # a dead server should cost seconds, not MLflow's default minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        ctx = hydra_context()
        run_dir = Path(run_dir)
        uri = self._uri(run_dir, ctx["sweep_dir"])
        if uri.startswith("sqlite:///"):  # jobs in parallel must not both create the schema
            with file_lock(Path(uri[len("sqlite:///") :] + ".lock")):
                self.client = MlflowClient(tracking_uri=uri)
                experiment_id = self._experiment_id(uri)
        else:  # postgresql:// with psycopg2 where psycopg 3 is missing, as for Optuna
            self.client = MlflowClient(tracking_uri=pg_driver(uri))
            experiment_id = self._experiment_id(uri)
        if ctx["sweep_dir"] is not None:
            self.sweep_dir = Path(ctx["sweep_dir"])
            self.parent_id = self._parent(experiment_id, self.sweep_dir, uri)
        previous = run_dir / MLFLOW_RUN_FILE
        if cfg.trainer.resume and previous.is_file():
            info = json.loads(previous.read_text())
            if info.get("tracking_uri") == register(uri):
                self.run_id = info["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                self.resumed = True
        if self.run_id is None:
            self.run_id = self._new_run(cfg, experiment_id, run_dir, ctx["job"])
            info = {
                "tracking_uri": register(uri),
                "run_id": self.run_id,
                "experiment": experiment_id,
            }
            previous.write_text(json.dumps(info, indent=2) + "\n")

    def _new_run(self, cfg: DictConfig, experiment_id: str, run_dir: Path, job: Any) -> str:
        """Create this job's run (tagged with its parent and Optuna trial); its id."""
        tags = {"snnbench.run_dir": str(run_dir.resolve()), "snnbench.host": socket.gethostname()}
        if self.parent_id is not None:
            tags["mlflow.parentRunId"] = self.parent_id
        trial = cfg.optuna.get("trial") if cfg.get("optuna") else None
        if trial is not None:
            tags["optuna.trial"] = str(trial)
            tags["optuna.study_name"] = str(cfg.optuna.study_name)
        tags.update(self.tags)
        name = self.run_name or _default_run_name(trial, job, run_dir)
        return self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    # -- logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resumed:  # params are immutable: a resumed run logged them already
            have = self.client.get_run(self.run_id).data.params
            params = {k: v for k, v in params.items() if k not in have}
        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_final(
        self, metrics: Mapping[str, float], params: Mapping[str, Any], status: str, step: int
    ) -> None:
        self.log_metrics(metrics, step)
        self.client.set_tag(self.run_id, "snnbench.status", status)

    def close(self, status: str) -> None:
        if self.client is None or self.run_id is None:
            return
        if self.parent_id is None or self.sweep_dir is None:
            self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))
            return
        with file_lock(self.sweep_dir / ".mlflow_parent.lock"):
            self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(status, "FAILED"))
            if not self._running_children():  # the last job to end finishes the parent
                self.client.set_terminated(self.parent_id, status="FINISHED")

    def _running_children(self) -> list[Any]:
        """The sweep's job runs still RUNNING (other jobs of the sweep at work)."""
        experiment = self.client.get_run(self.parent_id).info.experiment_id
        return self.client.search_runs(
            [experiment],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{self.parent_id}' and attributes.status = 'RUNNING'"
            ),
            max_results=1,
        )


def _param_text(v: Any) -> str:
    text = "null" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else str(v))
    return text[:6000]  # MLflow's limit on a param value


def _default_run_name(trial: Any, job: Any, run_dir: Path) -> str:
    if trial is not None:
        return f"trial {trial}"
    if job is not None:
        return f"job {job}"
    return run_dir.name


class RunLoggers:
    """The run's adapters; every call is guarded: an adapter that raises is reported once
    (one line naming it and the error) and not called again."""

    def __init__(self, adapters: list[Any]):
        self.adapters = adapters
        self.params: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return bool(self.adapters)

    def _each(self, what: str, fn) -> None:
        for adapter in list(self.adapters):
            try:
                fn(adapter)
            except Exception as exc:  # a tracker never takes the run down
                name = getattr(adapter, "name", type(adapter).__name__)
                text = redact(str(exc)).strip()  # no password from a URL in the log
                message = text.splitlines()[0] if text else ""
                if len(message) > 240:
                    message = message[:240] + "..."
                log.warning(
                    "logger %s failed (%s): %s: %s; it is off for the rest of this run "
                    "(metrics.json is unaffected)",
                    name,
                    what,
                    type(exc).__name__,
                    message,
                )
                self.adapters.remove(adapter)
                try:
                    adapter.close("failed")
                except Exception:
                    pass

    def start(self, cfg: DictConfig, run_dir: Path) -> None:
        """Open each tracker and log the resolved config as params."""
        self.params = config_params(cfg)
        self._each("start", lambda a: a.start(cfg, Path(run_dir)))
        self._each("params", lambda a: a.log_params(self.params))

    def log_epoch(self, entry: Mapping[str, Any]) -> None:
        """Log one metrics.json history entry (step = its epoch)."""
        metrics = epoch_metrics(entry)
        self._each("epoch metrics", lambda a: a.log_metrics(metrics, int(entry["epoch"])))

    def finish(self, record: Mapping[str, Any]) -> None:
        """Log the run's summary (whatever its status) and close every tracker."""
        status = str(record.get("status"))
        metrics = final_metrics(record)
        step = int(record.get("epochs_completed") or 0)
        self._each("final metrics", lambda a: a.log_final(metrics, self.params, status, step))
        self._each("close", lambda a: a.close(status))
        self.adapters = []


def open_loggers(cfg: DictConfig) -> RunLoggers:
    """Instantiate every ``cfg.logger.<name>`` that has a ``_target_`` (none: no-op group).

    Raises :class:`ConfigError` naming the entry when one cannot be built (missing package,
    unknown target, bad argument) — before any data is loaded.
    """
    group = cfg.get("logger")
    if not group:
        return RunLoggers([])
    if not isinstance(group, DictConfig):
        raise ConfigError(f"logger={group!r} is not allowed; choose a logger config or null")
    from hydra.utils import instantiate

    adapters = []
    for name, entry in group.items():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            continue
        try:
            adapters.append(instantiate(entry))
        except ConfigError:
            raise
        except Exception as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, ConfigError):
                raise cause from None
            raise ConfigError(
                f"logger.{name} could not be created: {type(cause).__name__}: {cause}"
            ) from None
    return RunLoggers(adapters)
