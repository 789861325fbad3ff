"""The study, reproduced and tuned, as one resumable command: ``python -m snnbench.study``.

Parts (each a list of runs or one Optuna search, run in this order; ``--parts`` picks some):

* ``reproduction`` — ANN, single-step and temporal SNN with the study's settings, per seed;
* ``search_ann``, ``search_single_step``, ``search_temporal`` — Optuna searches on the
  validation accuracy (presets ``conf/hparams_search/study_*.yaml``);
* ``tuned`` — each model's best searched configuration retrained for the full epochs, per seed;
* ``study_20ep`` — the study's temporal model trained twice as long (is it under-trained?);
* ``t_sweep`` — the best temporal recipe at several T (seed 0 for every T first, then the
  other seeds from the cheapest T up);
* ``fashion`` — study settings and tuned recipes of the three models on Fashion-MNIST;
* ``report`` — the analysis report of everything recorded (``python -m analysis.study``).

Every run lives in a fixed folder under ``--root`` (default ``docs/results``), is skipped when
its ``metrics.json`` says ``completed``, and otherwise is (re)started with
``trainer.resume=true``; a search continues its Optuna study (``optuna.db`` in its folder) up to
its trial count. So a killed study continues where it stopped, also from the committed
records alone. Each run is a ``python -m snnbench`` process (one crash never ends the study).
``--quick`` runs a miniature of the same plan (tiny data, 1 epoch, few trials) in minutes.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snnbench import exit_codes
from snnbench.executors import LAUNCHERS, Executor, LocalExecutor, make_executor
from snnbench.record import now
from snnbench.results import METRICS_FILE, read_json, versions, write_json

MODELS = ("ann", "single_step", "temporal")
#: ``--parts`` in execution order.
PARTS = (
    "reproduction",
    "search_ann",
    "search_single_step",
    "search_temporal",
    "tuned",
    "study_20ep",
    "t_sweep",
    "fashion",
    "report",
)
#: The run tags (``tag``, the analysis's ``part`` column) of each part whose runs are not
#: tagged with the part's own name.
PART_TAGS = {
    "reproduction": ("study",),
    "tuned": tuple(f"tuned_{m}" for m in MODELS),
    "fashion": ("fashion_study", "fashion_tuned"),
}
#: Folder (under the root) of the per-part logs, ``sessions.jsonl`` and ``best.json``.
LOG_DIR = "study_log"
#: Folder (under ``LOG_DIR``) of the claim locks of the items being run (not committed).
LOCK_DIR = "locks"
#: Folder (inside a run's folder) where the files of a run that could not be resumed are
#: moved; hidden (a dot folder), so the analysis does not read them as a run.
STALE_DIR = ".stale"
#: What the runner says of a run's exit code.
EXIT_MEANINGS = {
    exit_codes.FAILED: "the run failed; its record says why",
    exit_codes.BAD_INPUT: "bad config or data, nothing was run",
    exit_codes.STALE_CHECKPOINT: "its checkpoint still cannot be resumed",
}
#: Seconds between the updates of a part's wall time while one of its items runs.
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Plan:
    """How big each part is: the full study or its quick miniature."""

    name: str
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 10
    search_trials: dict[str, int] = field(
        default_factory=lambda: {"ann": 20, "single_step": 20, "temporal": 40}
    )
    t_values: tuple[int, ...] = (1, 2, 5, 10, 25, 50, 100)
    #: seeds of the tuned retraining and of the T sweep (the reproduction uses ``seeds``)
    tuned_seeds: tuple[int, ...] = (0, 1, 2)
    t_seeds: tuple[int, ...] = (0, 1, 2)
    #: from this T on, the T sweep runs only its first seed (None: every seed at every T;
    #: T=50 and 100 cost three quarters of the sweep)
    t_one_seed_from: int | None = None
    fashion_seeds: tuple[int, ...] = (0,)
    #: added to every command (data size, epochs of searches ...)
    common: tuple[str, ...] = ()
    #: added to searches only
    search_extra: tuple[str, ...] = ()
    #: the study's temporal model's T (100; the quick plan shortens it)
    study_T: int = 100


FULL = Plan(name="full")
QUICK = Plan(
    name="quick",
    seeds=(0, 1),
    epochs=1,
    search_trials={"ann": 3, "single_step": 3, "temporal": 3},
    t_values=(1, 2, 4),
    tuned_seeds=(0,),
    t_seeds=(0,),
    common=(
        "dataset.train_subset=1000",
        "dataset.eval_subset=300",
        "trainer.batch_size=100",
        "spiking.max_samples=100",
    ),
    search_extra=("trainer.epochs=1", "hydra.sweeper.pruner.name=none"),
    study_T=8,
)


@dataclass(frozen=True)
class RunSpec:
    """One training run: its part (``tag``), folder under the root and overrides."""

    tag: str
    path: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class SearchSpec:
    """One Optuna search: a ``hparams_search`` preset run into a fixed sweep folder."""

    tag: str
    path: str
    model: str
    preset: str
    n_trials: int
    overrides: tuple[str, ...]


Item = RunSpec | SearchSpec


def study_overrides(model: str, plan: Plan) -> list[str]:
    """The study's settings of ``model`` (its lr, 10 epochs, T=100 rate code for temporal)."""
    if model == "temporal":
        return ["experiment=study", f"model.num_steps={plan.study_T}"]
    return [f"model={model}"]


def _epochs(plan: Plan, epochs: int | None = None) -> str:
    return f"trainer.epochs={epochs or plan.epochs}"


def reproduction(plan: Plan) -> list[Item]:
    return [
        RunSpec(
            "study",
            f"reproduction/{m}/seed{s}",
            (*study_overrides(m, plan), _epochs(plan), f"trainer.seed={s}"),
        )
        for m in MODELS
        for s in plan.seeds
    ]


def search(model: str, plan: Plan) -> list[Item]:
    return [
        SearchSpec(
            f"search_{model}",
            f"search/{model}",
            model,
            f"study_{model}",
            plan.search_trials[model],
            plan.search_extra,
        )
    ]


def tuned(plan: Plan, best: dict[str, list[str]]) -> list[Item]:
    return [
        RunSpec(
            f"tuned_{m}",
            f"tuned/{m}/seed{s}",
            (f"model={m}", *best[m], _epochs(plan), f"trainer.seed={s}"),
        )
        for m in MODELS
        if m in best
        for s in plan.tuned_seeds
    ]


def study_20ep(plan: Plan) -> list[Item]:
    return [
        RunSpec(
            "study_20ep",
            "study_20ep/temporal/seed0",
            (*study_overrides("temporal", plan), _epochs(plan, 2 * plan.epochs), "trainer.seed=0"),
        )
    ]


def t_sweep(plan: Plan, best: dict[str, list[str]]) -> list[Item]:
    """The best temporal recipe at each T: the first seed at every T, then the other seeds
    (below ``plan.t_one_seed_from``) from the cheapest T up, so a study stopped early has
    whole T values with all seeds."""
    if "temporal" not in best:
        return []
    recipe = [o for o in best["temporal"] if not o.startswith("model.num_steps=")]
    first, *others = plan.t_seeds
    cap = plan.t_one_seed_from
    order = [(first, t) for t in plan.t_values] + [
        (s, t) for t in plan.t_values if cap is None or t < cap for s in others
    ]
    return [
        RunSpec(
            "t_sweep",
            f"t_sweep/T{t}/seed{s}",
            ("model=temporal", *recipe, f"model.num_steps={t}", _epochs(plan), f"trainer.seed={s}"),
        )
        for s, t in order
    ]


def fashion(plan: Plan, best: dict[str, list[str]]) -> list[Item]:
    items: list[Item] = []
    for s in plan.fashion_seeds:
        for m in MODELS:
            items.append(
                RunSpec(
                    "fashion_study",
                    f"fashion/study/{m}/seed{s}",
                    (
                        "dataset=fashion_mnist",
                        *study_overrides(m, plan),
                        _epochs(plan),
                        f"trainer.seed={s}",
                    ),
                )  # fmt: skip
            )
        for m in MODELS:
            if m in best:
                items.append(
                    RunSpec(
                        "fashion_tuned",
                        f"fashion/tuned/{m}/seed{s}",
                        (
                            "dataset=fashion_mnist",
                            f"model={m}",
                            *best[m],
                            _epochs(plan),
                            f"trainer.seed={s}",
                        ),
                    )  # fmt: skip
                )
    return items


# ---------------------------------------------------------------------------- execution


def run_done(run_dir: Path) -> bool:
    """True when the run's record says it completed all its epochs."""
    try:
        rec = read_json(run_dir / METRICS_FILE)
    except (OSError, ValueError):
        return False
    return rec.get("status") == "completed" and rec.get("epochs_completed") == rec.get("epochs")


def load_search(sweep_dir: Path, study_name: str) -> Any | None:
    """The search's Optuna study (``optuna.db`` in its folder), None before it started."""
    db = sweep_dir / "optuna.db"
    if not db.is_file():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
    except KeyError:
        return None


def search_done(sweep_dir: Path, study_name: str, n_trials: int) -> bool:
    """Whether the sweeper has finished the search (its ``max_trials`` reached, failed
    trials included, nothing running or waiting for a retry)."""
    from snnbench.sweeps.study import search_finished

    found = load_search(sweep_dir, study_name)
    return found is not None and search_finished(found, n_trials)


def best_overrides(sweep_dir: Path, model: str) -> list[str] | None:
    """The best COMPLETE trial's params as overrides (highest validation accuracy); None
    when the search has no completed trial."""
    from optuna.trial import TrialState

    found = load_search(sweep_dir, f"study_{model}")
    if found is None:
        return None
    done = [
        t
        for t in found.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]
    if not done:
        return None
    best = max(done, key=lambda t: (t.value, -t.number))
    return [f"{k}={_value(v)}" for k, v in sorted(best.params.items())]


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class Runner:
    """Runs a plan's items under ``root``, skipping what is recorded; logs wall times.

    Several runners may work on one root at once, on the same parts or different ones: a
    runner claims an item with an exclusive lock (``study_log/locks/``, released when its
    process ends, also when it is killed) and passes over items another runner holds. Each
    part's log is its own file (``study_log/<part>.json``); sessions are appended to
    ``sessions.jsonl``.
    """

    def __init__(
        self,
        root: Path,
        plan: Plan,
        threads: int | None,
        python: str = sys.executable,
        executor: Executor | None = None,
    ):
        self.root = root
        self.plan = plan
        self.threads = threads
        self.python = python
        self.log_dir = root / LOG_DIR
        self.executor = executor or LocalExecutor()  # where an item's command runs

    def _common(self, tag: str) -> list[str]:
        extra = [f"trainer.num_threads={self.threads}"] if self.threads else []
        return [*self.plan.common, f"tag={tag}", "trainer.progress=false", *extra]

    def command(self, item: Item) -> list[str]:
        """The ``python -m snnbench`` command line of an item."""
        where = self.root / item.path
        if isinstance(item, RunSpec):
            return [
                self.python, "-m", "snnbench", *item.overrides, *self._common(item.tag),
                "trainer.resume=true", f"hydra.run.dir={where}",
            ]  # fmt: skip
        return [
            self.python, "-m", "snnbench", "-m", f"hparams_search={item.preset}",
            *self._common(item.tag), *item.overrides,
            f"hydra.sweeper.n_trials={item.n_trials}", f"hydra.sweeper.max_trials={item.n_trials}",
            f"hydra.sweep.dir={where}",
        ]  # fmt: skip

    def done(self, item: Item) -> bool:
        if isinstance(item, RunSpec):
            return run_done(self.root / item.path)
        return search_done(self.root / item.path, item.preset, item.n_trials)

    def run_items(self, part: str, items: Sequence[Item]) -> bool:
        """Run what is not done yet; True when every item of the part is done."""
        todo = [i for i in items if not self.done(i)]
        print(f"[study] {part}: {len(items) - len(todo)}/{len(items)} done", flush=True)
        ok = True
        for item in todo:
            with self._claim(item) as mine:
                if not mine:
                    print(f"[study] {part}: {item.path} is being run by another runner; passed")
                    ok = False
                    continue
                if self.done(item):  # finished by another runner since the list was made
                    continue
                ok &= self._run_item(part, items, item)
        self._log_part(part, items, 0.0)
        return ok

    def _run_item(self, part: str, items: Sequence[Item], item: Item) -> bool:
        """Run one item; only a checkpoint the run proved unusable (exit code
        ``STALE_CHECKPOINT``) is set aside (moved) before one more try. Any other failure
        leaves the folder as it is, reported in one line; the study goes on."""
        print(f"[study] {now()} {part}: {item.path}", flush=True)
        rc = self._run_logged(part, items, item)
        if rc == exit_codes.STALE_CHECKPOINT and isinstance(item, RunSpec):
            self._set_aside(item)
            rc = self._run_logged(part, items, item)
        if rc != exit_codes.OK or not self.done(item):
            why = EXIT_MEANINGS.get(rc, "the run failed")
            print(f"[study] {part}: {item.path} did not finish (exit {rc}: {why}); left as it is")
            return False
        return True

    def _run_logged(self, part: str, items: Sequence[Item], item: Item) -> int:
        """Run the item's process; add its wall time to the part's log every
        ``LOG_EVERY_S`` (a killed runner loses at most that much of it). Returns the exit code."""
        proc = self.executor.start(self.command(item))
        last = time.time()
        while True:
            try:
                rc: int | None = proc.wait(timeout=LOG_EVERY_S)
            except subprocess.TimeoutExpired:
                rc = None
            t = time.time()
            self._log_part(part, items, t - last)
            last = t
            if rc is not None:
                return rc

    @contextmanager
    def _claim(self, item: Item) -> Iterator[bool]:
        """Hold the item's exclusive lock while running it; yields False when another
        runner (a live process) holds it."""
        lock = self._lock_path(item)
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _set_aside(self, item: RunSpec) -> Path:
        """Move the files of a run whose checkpoint it refused to resume (another config or
        version of snnbench) into ``.stale/<time>/`` inside its folder (hidden from the
        analysis), so the run starts again and nothing is deleted. Returns that folder."""
        from snnbench.results import BEST_MODEL_FILE, CHECKPOINT_FILE

        run_dir = self.root / item.path
        dest = run_dir / STALE_DIR / now().replace(":", "")
        dest.mkdir(parents=True, exist_ok=True)
        for name in (CHECKPOINT_FILE, METRICS_FILE, BEST_MODEL_FILE):
            if (run_dir / name).is_file():
                (run_dir / name).replace(dest / name)
        print(
            f"[study] {item.path}: its checkpoint cannot be resumed; moved to {dest}; starting over"
        )
        return dest

    def _log_part(self, part: str, items: Sequence[Item], seconds: float) -> None:
        """Add ``seconds`` to the part's wall time (summed over sessions) and count its items."""
        path = self.log_dir / f"{part}.json"
        try:
            entry = read_json(path)
        except (OSError, ValueError):
            entry = {"part": part, "plan": self.plan.name, "wall_s": 0.0}
        entry["wall_s"] = round(entry["wall_s"] + seconds, 1)
        entry["items"] = len(items)
        entry["done"] = sum(self.done(i) for i in items)
        entry["last_update"] = now()
        write_json(path, entry)

    def start_session(self, parts: Sequence[str]) -> None:
        """Append this invocation (machine, load, versions) to ``sessions.jsonl``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        line = {
            "started_at": now(),
            "plan": self.plan.name,
            "parts": list(parts),
            "machine": machine(),
            "threads": self.threads,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "versions": versions(),
        }
        with open(self.log_dir / "sessions.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def held(self, item: Item) -> bool:
        """True when another (live) runner holds the item (reads only: creates nothing)."""
        lock = self._lock_path(item)
        if not lock.is_file():
            return False
        with open(lock) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    def _lock_path(self, item: Item) -> Path:
        return self.log_dir / LOCK_DIR / (item.path.replace("/", "__") + ".lock")

    def best(self, write: bool = True) -> dict[str, list[str]]:
        """The best overrides of each model whose search has finished (a recipe from a
        search still running could change; written to ``best.json``)."""
        out = {}
        for m in MODELS:
            if self.recipe_state(m) == "ready":
                out[m] = best_overrides(self.root / f"search/{m}", m)
        if write:
            write_json(self.log_dir / "best.json", out)
        return out

    def recipe_state(self, model: str) -> str:
        """``ready`` (search finished with a completed trial), ``searching`` (not finished)
        or ``none`` (finished without any completed trial: there will be no recipe)."""
        (spec,) = search(model, self.plan)
        if not self.done(spec):
            return "searching"
        return "ready" if best_overrides(self.root / spec.path, model) else "none"

    def say_missing_recipes(self, part: str) -> bool:
        """One line per model without a recipe for ``part``; True when none is missing."""
        ok = True
        for m in MODELS:
            state = self.recipe_state(m)
            if state == "searching":
                print(f"[study] {part}: no {m} items yet: search_{m} has not finished")
            elif state == "none":
                print(
                    f"[study] {part}: no {m} items: search_{m} finished without a completed "
                    "trial, so there is no recipe (see its trials.csv)"
                )
            ok &= state == "ready"
        return ok


def machine() -> dict[str, Any]:
    """CPU model, logical CPUs and OS of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "os": platform.platform()}


#: Parts that need the searches' best recipes (``Runner.best``) to list their items.
NEEDS_BEST = ("tuned", "t_sweep", "fashion")


def part_items(part: str, plan: Plan, best: dict[str, list[str]]) -> list[Item]:
    """The items of a part (not ``report``); ``best`` is used by the parts in NEEDS_BEST."""
    if part.startswith("search_"):
        return search(part.removeprefix("search_"), plan)
    simple: dict[str, Callable[[Plan], list[Item]]] = {
        "reproduction": reproduction,
        "study_20ep": study_20ep,
    }
    if part in simple:
        return simple[part](plan)
    needs_best: dict[str, Callable[[Plan, dict[str, list[str]]], list[Item]]] = {
        "tuned": tuned,
        "t_sweep": t_sweep,
        "fashion": fashion,
    }
    return needs_best[part](plan, best)


def run_study(
    root: Path,
    plan: Plan,
    parts: Sequence[str],
    threads: int | None,
    executor: Executor | None = None,
) -> int:
    """Run ``parts`` of ``plan`` into ``root``; return 0 when all of them are complete."""
    runner = Runner(root, plan, threads, executor=executor)
    runner.start_session(parts)
    complete = True
    for part in PARTS:
        if part not in parts:
            continue
        if part == "report":
            from analysis.study import write_study_report

            write_study_report(root, root)
            print(f"[study] report written to {root}")
            continue
        best: dict[str, list[str]] = {}
        if part in NEEDS_BEST:
            best = runner.best()
            complete &= runner.say_missing_recipes(part)
        complete &= runner.run_items(part, part_items(part, plan, best))
    return 0 if complete else 1


def list_items(runner: Runner) -> None:
    """Print each item of the plan: done, running (another runner holds it) or todo."""
    best = runner.best(write=False)
    for part in PARTS:
        if part == "report":
            continue
        for item in part_items(part, runner.plan, best):
            state = "done" if runner.done(item) else ("running" if runner.held(item) else "todo")
            print(f"{state:7s}  {item.tag:16s} {item.path}  {' '.join(item.overrides)}")
    for m in MODELS:
        state = runner.recipe_state(m)
        if state == "searching":
            print(f"(no tuned, T-sweep or Fashion item of {m} yet: its search has not finished)")
        elif state == "none":
            print(f"(no tuned, T-sweep or Fashion item of {m}: its search has no completed trial)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m snnbench.study",
        description="Run the study (reproduction, searches, tuned runs, T sweep, Fashion-MNIST) "
        "resumably into fixed folders and write its report.",
    )
    p.add_argument("--quick", action="store_true", help="the miniature plan (minutes)")
    p.add_argument("--root", type=Path, help="where runs and the report go "
                   "(default docs/results, or outputs/study_quick with --quick)")  # fmt: skip
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART",
                   help=f"parts to run, of: {', '.join(PARTS)} (default: all)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="trainer.num_threads of every run")
    p.add_argument("--list", action="store_true", help="print the plan's items and exit")
    p.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="where each item runs: a local process or a SLURM job (sbatch)",
    )
    p.add_argument("--sbatch", default="", metavar="ARGS",
                   help="sbatch options of every job (--launcher slurm), e.g. "
                   "'--partition=cpu --time=240'")  # fmt: skip
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads={args.threads} is not allowed; it must be an integer >= 1")
    if args.sbatch and args.launcher != "slurm":
        p.error("--sbatch is only for --launcher slurm")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    root = args.root or Path("outputs/study_quick" if args.quick else "docs/results")
    if args.list:
        list_items(Runner(root, plan, args.threads))
        return 0
    try:
        executor = make_executor(args.launcher, root / LOG_DIR / "slurm", args.sbatch, args.threads)
    except ValueError as exc:
        print(f"snnbench.study: error: {exc}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    return run_study(root, plan, args.parts, args.threads, executor)


if __name__ == "__main__":
    sys.exit(main())
