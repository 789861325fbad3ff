"""The study as one resumable command: ``python -m snnbench.study [--plan NAME|FILE]``.

The plan — its parts, and the runs and Optuna searches of each — is a YAML file
(:mod:`snnbench.studies.plan`; ``conf/study/published.yaml`` is the published study,
``conf/study/quick.yaml`` its miniature, ``--quick``). Parts run in the plan's order
(``--parts`` picks some), then the report (``analysis.study``).

Every run lives in a fixed folder under the root (default: the plan's ``root``), is skipped
when its ``metrics.json`` says ``completed``, and otherwise is (re)started with
``trainer.resume=true``; a search continues its Optuna study (``optuna.db`` in its folder) up to
its trial count. So a killed study continues where it stopped, also from the committed
records alone. Each run is a ``python -m snnbench`` process (one crash never ends the study).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from snnbench.config import ConfigError
from snnbench.run import exit_codes
from snnbench.run.record import now
from snnbench.run.results import METRICS_FILE, read_json, versions, write_json
from snnbench.studies.executors import LAUNCHERS, Executor, LocalExecutor, make_executor, start_all
from snnbench.studies.plan import Item, RunSpec, StudyPlan, load_plan, part_items

#: The study's three models (the report's rows).
MODELS = ("ann", "single_step", "temporal")
#: The plan run when none is named, and the quick one (``--quick``).
DEFAULT_PLAN, QUICK_PLAN = "published", "quick"
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
#: Sampler seed step between a search's workers (worker i samples with seed + i * step).
WORKER_SEED_STEP = 10_000


# ---------------------------------------------------------------------------- execution


def run_done(run_dir: Path) -> bool:
    """True when the run's record says it completed all its epochs."""
    try:
        rec = read_json(run_dir / METRICS_FILE)
    except (OSError, ValueError):
        return False
    return rec.get("status") == "completed" and rec.get("epochs_completed") == rec.get("epochs")


def load_search(sweep_dir: Path, study_name: str, storage: str | None = None) -> Any | None:
    """The search's Optuna study (``optuna.db`` in its folder, or in ``storage``), None
    before it started."""
    import optuna

    if storage is None:
        db = sweep_dir / "optuna.db"
        if not db.is_file():
            return None
        storage = f"sqlite:///{db}"
    from snnbench.sweeps.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        return None


def search_done(
    sweep_dir: Path, study_name: str, n_trials: int, storage: str | None = None
) -> bool:
    """Whether the sweeper has finished the search (its ``max_trials`` reached, failed
    trials included, nothing running or waiting for a retry)."""
    from snnbench.sweeps.study import search_finished

    found = load_search(sweep_dir, study_name, storage)
    return found is not None and search_finished(found, n_trials)


def best_overrides(
    sweep_dir: Path, study_name: str, storage: str | None = None
) -> list[str] | None:
    """The best COMPLETE trial's params as overrides (highest validation accuracy); None
    when the search has no completed trial."""
    from optuna.trial import TrialState

    found = load_search(sweep_dir, study_name, storage)
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
    ``sessions.jsonl``. A search runs as ``search_workers`` sweep processes (local processes
    or SLURM jobs, started together) on its one Optuna storage: the study's ``max_trials``
    caps them together, each samples with its own seed. ``storage`` (a URL without a
    password) holds the searches' studies instead of an ``optuna.db`` in each search folder.
    """

    def __init__(
        self,
        root: Path,
        plan: StudyPlan,
        threads: int | None,
        python: str = sys.executable,
        executor: Executor | None = None,
        search_workers: int = 1,
        storage: str | None = None,
    ):
        self.root = root
        self.search_workers = search_workers
        self.storage = storage
        self.plan = plan
        self.threads = threads
        self.python = python
        self.log_dir = root / LOG_DIR
        self.executor = executor or LocalExecutor()  # where an item's command runs

    def _common(self, tag: str) -> list[str]:
        extra = [f"trainer.num_threads={self.threads}"] if self.threads else []
        return [f"tag={tag}", "trainer.progress=false", *extra]

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
            *([f"hydra.sweeper.storage={self.storage}"] if self.storage else []),
        ]  # fmt: skip

    def commands(self, item: Item) -> list[list[str]]:
        """The item's command lines: one per worker of a search, else one."""
        command = self.command(item)
        if isinstance(item, RunSpec) or self.search_workers == 1:
            return [command]
        seed = sampler_seed(item.overrides)
        if seed is None:  # unseeded: every worker draws its own
            return [command] * self.search_workers
        return [command] + [
            [*command, f"hydra.sweeper.sampler.seed={seed + i * WORKER_SEED_STEP}"]
            for i in range(1, self.search_workers)
        ]

    def done(self, item: Item) -> bool:
        if isinstance(item, RunSpec):
            return run_done(self.root / item.path)
        return search_done(self.root / item.path, item.study, item.n_trials, self.storage)

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
        proc = start_all(self.executor, self.commands(item))
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
        from snnbench.run.results import BEST_MODEL_FILE, CHECKPOINT_FILE

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
        """The best overrides of each search part that has finished (a recipe from a search
        still running could change; written to ``best.json``), by part name."""
        out = {}
        for part in self.plan.parts:
            if part.search is not None and self.recipe_state(part.name) == "ready":
                where = self.root / part.search.path
                out[part.name] = best_overrides(where, part.search.study, self.storage)
        if write:
            write_json(self.log_dir / "best.json", out)
        return out

    def recipe_state(self, search_part: str) -> str:
        """``ready`` (search finished with a completed trial), ``searching`` (not finished)
        or ``none`` (finished without any completed trial: there will be no recipe)."""
        spec = self.plan.part(search_part).search
        assert spec is not None, search_part
        where = self.root / spec.path
        if not search_done(where, spec.study, spec.n_trials, self.storage):
            return "searching"
        return "ready" if best_overrides(where, spec.study, self.storage) else "none"

    def say_missing_recipes(self, part: str) -> bool:
        """One line per recipe ``part`` waits for or will not get; True when none is missing."""
        ok = True
        for search_part in self.plan.part(part).recipes:
            state = self.recipe_state(search_part)
            if state == "searching":
                print(f"[study] {part}: no items of {search_part} yet: it has not finished")
            elif state == "none":
                print(
                    f"[study] {part}: no items of {search_part}: it finished without a completed "
                    "trial, so there is no recipe (see its trials.csv)"
                )
            ok &= state == "ready"
        return ok


def study_storage(url: str | None) -> str | None:
    """``--storage`` made absolute (relative files from here); ValueError (one line) when it
    is not a storage or holds a password (the jobs' command lines are not secret)."""
    if url is None:
        return None
    from snnbench.sweeps.storage import redact, resolve_storage

    try:
        spec = resolve_storage(url, Path("."), Path.cwd())
    except ValueError as exc:  # SweepConfigError
        raise ValueError(str(exc).replace("hydra.sweeper.storage", "--storage")) from None
    if redact(spec) != spec:
        raise ValueError(
            f"--storage={redact(url)!r} holds a password; give it through ~/.pgpass or "
            "PGPASSWORD instead (the jobs' command lines are not secret)"
        )
    return spec


def sampler_seed(overrides: Sequence[str]) -> int | None:
    """The sampler seed a search's overrides give (the last), else the sweeper's default."""
    from snnbench.sweeps.settings import SamplerConf

    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweeper.sampler.seed=")]
    if not given:
        return SamplerConf().seed
    return None if given[-1].lower() in ("null", "none", "~") else int(given[-1])


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


def run_study(
    root: Path,
    plan: StudyPlan,
    parts: Sequence[str],
    threads: int | None,
    executor: Executor | None = None,
    search_workers: int = 1,
    storage: str | None = None,
) -> int:
    """Run ``parts`` of ``plan`` into ``root``; return 0 when all of them are complete."""
    runner = Runner(
        root, plan, threads, executor=executor, search_workers=search_workers, storage=storage
    )
    runner.start_session(parts)
    complete = True
    for part in plan.parts:
        if part.name not in parts:
            continue
        best = runner.best() if part.recipes else {}
        if part.recipes:
            complete &= runner.say_missing_recipes(part.name)
        complete &= runner.run_items(part.name, part_items(part, plan, best))
    if "report" in parts:
        # the report is the analysis's own command: the runner imports no analysis
        # code (the analysis reads the plan, so the two never import each other)
        cmd = [sys.executable, "-m", "analysis.study", str(root)]
        if subprocess.run(cmd, check=False).returncode != 0:
            print(f"[study] the report failed: {shlex.join(cmd)}", file=sys.stderr)
            return 1
        print(f"[study] report written to {root}")
    return 0 if complete else 1


def list_items(runner: Runner) -> None:
    """Print each item of the plan: done, running (another runner holds it) or todo."""
    best = runner.best(write=False)
    for part in runner.plan.parts:
        for item in part_items(part, runner.plan, best):
            state = "done" if runner.done(item) else ("running" if runner.held(item) else "todo")
            print(f"{state:7s}  {item.tag:16s} {item.path}  {' '.join(item.overrides)}")
    for part in runner.plan.parts:
        if part.search is None:
            continue
        state = runner.recipe_state(part.name)
        if state == "searching":
            print(f"(no items from the recipe of {part.name} yet: it has not finished)")
        elif state == "none":
            print(f"(no items from the recipe of {part.name}: it has no completed trial)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m snnbench.study",
        description="Run a study plan (conf/study/*.yaml: parts of runs and Optuna searches) "
        "resumably into fixed folders and write its report.",
    )
    p.add_argument("--plan", default=None, help=f"a plan name (study/NAME.yaml in --config-dir "
                   f"or snnbench's conf) or a YAML file (default: {DEFAULT_PLAN})")  # fmt: skip
    p.add_argument("--config-dir", action="append", default=[], type=Path,
                   help="a config folder with your own study/NAME.yaml (first)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help=f"= --plan {QUICK_PLAN} (minutes)")
    p.add_argument("--root", type=Path, help="where runs and the report go (default: the "
                   "plan's root)")  # fmt: skip
    p.add_argument("--parts", nargs="+", default=None, metavar="PART",
                   help="parts to run (default: all, then 'report')")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="trainer.num_threads of every run")
    p.add_argument("--list", action="store_true", help="print the plan's items and exit")
    p.add_argument("--search-workers", type=int, default=1, metavar="N",
                   help="run each search as N sweep processes (SLURM jobs with --launcher "
                   "slurm) on its one Optuna storage (default: 1)")  # fmt: skip
    p.add_argument("--storage", default=None, metavar="URL",
                   help="the Optuna storage of every search (e.g. postgresql://USER@HOST/DB; "
                   "no password: ~/.pgpass or PGPASSWORD) instead of an optuna.db in each "
                   "search folder")  # fmt: skip
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
    if args.sbatch and args.launcher != "slurm":
        p.error("--sbatch is only for --launcher slurm")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads={args.threads} is not allowed; it must be an integer >= 1")
    if args.search_workers < 1:
        p.error(f"--search-workers={args.search_workers} is not allowed; it must be >= 1")
    if args.quick and args.plan:
        p.error("--quick is --plan quick: give one of them")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = load_plan(QUICK_PLAN if args.quick else args.plan or DEFAULT_PLAN, args.config_dir)
    except ConfigError as exc:
        print(f"snnbench.study: error: {exc}", file=sys.stderr)
        return 2
    parts = args.parts or [*plan.part_names, "report"]
    unknown = [x for x in parts if x not in (*plan.part_names, "report")]
    if unknown:
        print(
            f"snnbench.study: error: --parts {unknown[0]} is not a part of plan {plan.name!r}; "
            f"its parts: {', '.join(plan.part_names)}, report",
            file=sys.stderr,
        )
        return 2
    root = args.root or Path(plan.root)
    try:
        storage = study_storage(args.storage)
    except ValueError as exc:
        print(f"snnbench.study: error: {exc}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    if args.list:
        list_items(Runner(root, plan, args.threads, storage=storage))
        return 0
    try:
        executor = make_executor(args.launcher, root / LOG_DIR / "slurm", args.sbatch, args.threads)
    except ValueError as exc:
        print(f"snnbench.study: error: {exc}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    return run_study(root, plan, parts, args.threads, executor, args.search_workers, storage)


if __name__ == "__main__":
    sys.exit(main())
